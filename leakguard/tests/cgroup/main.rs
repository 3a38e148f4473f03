//! The cgroup reader on fixture trees and on the real cgroup this process runs in. One binary
//! instead of two, so the crate is linked once for them.

mod fixture;
mod real;
