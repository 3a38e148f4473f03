//! A heap profile as pprof's `profile.proto` (gzipped), symbolized in the process.
//!
//! The messages are those of <https://github.com/google/pprof/blob/main/proto/profile.proto>
//! (the fields leakguard writes), encoded with `prost`.

use super::HeapProfile;
use super::symbols::{self, Frame};
use std::collections::HashMap;
use std::io::Write as _;
use std::sync::Arc;

#[derive(Clone, PartialEq, prost::Message)]
struct Profile {
    #[prost(message, repeated, tag = "1")]
    sample_type: Vec<ValueType>,
    #[prost(message, repeated, tag = "2")]
    sample: Vec<Sample>,
    #[prost(message, repeated, tag = "3")]
    mapping: Vec<Mapping>,
    #[prost(message, repeated, tag = "4")]
    location: Vec<Location>,
    #[prost(message, repeated, tag = "5")]
    function: Vec<Function>,
    #[prost(string, repeated, tag = "6")]
    string_table: Vec<String>,
    #[prost(int64, tag = "9")]
    time_nanos: i64,
    #[prost(message, optional, tag = "11")]
    period_type: Option<ValueType>,
    #[prost(int64, tag = "12")]
    period: i64,
    #[prost(int64, repeated, tag = "13")]
    comment: Vec<i64>,
    #[prost(int64, tag = "14")]
    default_sample_type: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct ValueType {
    #[prost(int64, tag = "1")]
    r#type: i64,
    #[prost(int64, tag = "2")]
    unit: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Sample {
    #[prost(uint64, repeated, tag = "1")]
    location_id: Vec<u64>,
    #[prost(int64, repeated, tag = "2")]
    value: Vec<i64>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Mapping {
    #[prost(uint64, tag = "1")]
    id: u64,
    #[prost(uint64, tag = "2")]
    memory_start: u64,
    #[prost(uint64, tag = "3")]
    memory_limit: u64,
    #[prost(uint64, tag = "4")]
    file_offset: u64,
    #[prost(int64, tag = "5")]
    filename: i64,
    #[prost(bool, tag = "7")]
    has_functions: bool,
    #[prost(bool, tag = "8")]
    has_filenames: bool,
    #[prost(bool, tag = "9")]
    has_line_numbers: bool,
    #[prost(bool, tag = "10")]
    has_inline_frames: bool,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Location {
    #[prost(uint64, tag = "1")]
    id: u64,
    #[prost(uint64, tag = "2")]
    mapping_id: u64,
    #[prost(uint64, tag = "3")]
    address: u64,
    #[prost(message, repeated, tag = "4")]
    line: Vec<Line>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Line {
    #[prost(uint64, tag = "1")]
    function_id: u64,
    #[prost(int64, tag = "2")]
    line: i64,
}

#[derive(Clone, PartialEq, prost::Message)]
struct Function {
    #[prost(uint64, tag = "1")]
    id: u64,
    #[prost(int64, tag = "2")]
    name: i64,
    #[prost(int64, tag = "3")]
    system_name: i64,
    #[prost(int64, tag = "4")]
    filename: i64,
}

#[derive(Default)]
struct Strings {
    table: Vec<String>,
    index: HashMap<String, i64>,
}

impl Strings {
    fn new() -> Self {
        let mut s = Strings::default();
        s.get(""); // index 0 is always the empty string
        s
    }
    fn get(&mut self, s: &str) -> i64 {
        if let Some(i) = self.index.get(s) {
            return *i;
        }
        let i = self.table.len() as i64;
        self.table.push(s.to_owned());
        self.index.insert(s.to_owned(), i);
        i
    }
}

/// Most executable mappings listed (from `/proc/self/maps`).
const MAX_MAPPINGS: usize = 256;

/// The executable file mappings of this process: (start, end, offset, path), those of the
/// executable first (`go tool pprof <binary> <profile>` takes the first mapping for the
/// binary it is given). `/proc/self/maps` is read line by line.
fn mappings() -> Vec<(u64, u64, u64, String)> {
    use std::io::BufRead as _;
    let Ok(maps) = std::fs::File::open("/proc/self/maps") else {
        return Vec::new();
    };
    let mut out: Vec<(u64, u64, u64, String)> = std::io::BufReader::new(maps)
        .lines()
        .map_while(|l| l.ok())
        .filter_map(|l| {
            let mut f = l.split_ascii_whitespace();
            let range = f.next()?;
            let perms = f.next()?;
            let offset = u64::from_str_radix(f.next()?, 16).ok()?;
            let path = f.nth(2)?;
            if !perms.contains('x') || !path.starts_with('/') {
                return None;
            }
            let (a, b) = range.split_once('-')?;
            Some((
                u64::from_str_radix(a, 16).ok()?,
                u64::from_str_radix(b, 16).ok()?,
                offset,
                path.to_owned(),
            ))
        })
        .take(MAX_MAPPINGS)
        .collect();
    if let Ok(exe) = std::fs::read_link("/proc/self/exe") {
        let exe = exe.to_string_lossy();
        out.sort_by_key(|m| m.3 != exe);
    }
    out
}

/// The profile's header: sample types, period, time, comments (`first`, then what was left
/// out) and the process's mappings, marked as symbolized or not, with their strings.
fn header(p: &HeapProfile, strings: &mut Strings, first: Vec<String>, symbolized: bool) -> Profile {
    let mut comments = first;
    if p.dropped_stacks > 0 {
        comments.push(format!(
            "{} smaller stacks left out (at most {} kept)",
            p.dropped_stacks,
            super::MAX_STACKS
        ));
    }
    let mut out = Profile {
        sample_type: vec![
            ValueType {
                r#type: strings.get("inuse_objects"),
                unit: strings.get("count"),
            },
            ValueType {
                r#type: strings.get("inuse_space"),
                unit: strings.get("bytes"),
            },
        ],
        period_type: Some(ValueType {
            r#type: strings.get("space"),
            unit: strings.get("bytes"),
        }),
        period: p.sample_period as i64,
        time_nanos: (p.at * 1e9) as i64,
        ..Profile::default()
    };
    out.default_sample_type = out.sample_type[1].r#type;
    out.comment = comments.iter().map(|c| strings.get(c)).collect();
    for (i, (start, end, offset, path)) in mappings().iter().enumerate() {
        out.mapping.push(Mapping {
            id: i as u64 + 1,
            memory_start: *start,
            memory_limit: *end,
            file_offset: *offset,
            filename: strings.get(path),
            has_functions: symbolized,
            has_filenames: symbolized,
            has_line_numbers: symbolized,
            has_inline_frames: symbolized,
        });
    }
    out
}

/// The id of the mapping that holds address `a` (0: none).
fn mapping_id(mappings: &[Mapping], a: u64) -> u64 {
    mappings
        .iter()
        .find(|m| m.memory_start <= a && a < m.memory_limit)
        .map_or(0, |m| m.id)
}

/// Most addresses whose location is shared between the stacks of an unsymbolized profile;
/// an address seen beyond these gets a location per stack (a larger file, no more memory).
const MAX_LOCATION_INDEX: usize = 1 << 15;

/// Encodes `p` as gzipped pprof without symbolizing it: locations are addresses in the
/// process's mappings (marked as having no functions, so `go tool pprof <binary> <file>`
/// symbolizes them). Nothing is resolved, and nothing is built whole but the compressed
/// output: samples and locations are encoded one by one as they are written. What it needs
/// besides the output is bounded: the mappings (at most [`MAX_MAPPINGS`]), a location index of
/// at most [`MAX_LOCATION_INDEX`] addresses, one sample, and the compressor's state.
pub(super) fn encode_addresses(p: &HeapProfile, why: &str) -> Vec<u8> {
    let mut out = Vec::new();
    // Writing into a Vec cannot fail.
    let _ = write_addresses(p, why, &mut out);
    out
}

/// [`encode_addresses`], written to `w` as it is encoded and compressed: not even the output
/// is held.
pub(super) fn write_addresses(
    p: &HeapProfile,
    why: &str,
    w: &mut dyn std::io::Write,
) -> std::io::Result<()> {
    use prost::Message as _;
    let mut strings = Strings::new();
    let comments = vec![format!(
        "leakguard heap profile: live allocations sampled by jemalloc every {} bytes on average; not symbolized ({why}): `go tool pprof <binary> <file>` symbolizes it; the allocator's own frames are in the stacks",
        p.sample_period
    )];
    let head = header(p, &mut strings, comments, false);
    let mut gz = flate2::write::GzEncoder::new(w, flate2::Compression::default());
    let mut scratch = Vec::new();
    // Messages written one after another merge into one: repeated fields are concatenated.
    fn put(gz: &mut impl std::io::Write, scratch: &mut Vec<u8>) -> std::io::Result<()> {
        gz.write_all(scratch)?;
        scratch.clear();
        Ok(())
    }
    // Encoding into a Vec cannot fail.
    let _ = head.encode(&mut scratch);
    put(&mut gz, &mut scratch)?;
    let mut locations: HashMap<usize, u64> = HashMap::new();
    let mut next_id = 0u64;
    for stack in &p.stacks {
        let mut sample = Sample {
            location_id: Vec::with_capacity(stack.addrs.len()),
            value: vec![stack.objects.round() as i64, stack.bytes.round() as i64],
        };
        for &addr in stack.addrs.iter() {
            if let Some(id) = locations.get(&addr) {
                sample.location_id.push(*id);
                continue;
            }
            next_id += 1;
            if locations.len() < MAX_LOCATION_INDEX {
                locations.insert(addr, next_id);
            }
            let a = addr as u64;
            let location = Location {
                id: next_id,
                mapping_id: mapping_id(&head.mapping, a),
                address: a.saturating_sub(1),
                line: Vec::new(),
            };
            prost::encoding::message::encode(4, &location, &mut scratch);
            sample.location_id.push(next_id);
        }
        prost::encoding::message::encode(2, &sample, &mut scratch);
        put(&mut gz, &mut scratch)?;
    }
    let tail = Profile {
        string_table: strings.table,
        ..Profile::default()
    };
    let _ = tail.encode(&mut scratch);
    put(&mut gz, &mut scratch)?;
    gz.finish().map(|_| ())
}

/// Encodes `p` (a profile or a diff) as gzipped pprof, symbolized.
pub(super) fn encode(p: &HeapProfile) -> Vec<u8> {
    encode_with(p, &symbols::resolve)
}

/// [`encode`], with the frames of each address from `resolve`.
pub(super) fn encode_with(p: &HeapProfile, resolve: &dyn Fn(usize) -> Arc<[Frame]>) -> Vec<u8> {
    let mut strings = Strings::new();
    let mut comments = vec![format!(
        "leakguard heap profile: live allocations sampled by jemalloc every {} bytes on average; allocator frames left out",
        p.sample_period
    )];
    if let Some(base) = p.base_at {
        comments.push(format!(
            "diff: live heap at {:.0} minus the baseline taken at {base:.0} (seconds since the epoch)",
            p.at
        ));
    }
    let mut out = header(p, &mut strings, comments, true);

    let mut functions: HashMap<Arc<str>, u64> = HashMap::new();
    // A location is an address, and how many of its inlined frames were left out.
    let mut locations: HashMap<(usize, usize), u64> = HashMap::new();
    for stack in &p.stacks {
        let resolved: Vec<Arc<[Frame]>> = stack.addrs.iter().map(|a| resolve(*a)).collect();
        let Some((first, skip)) = symbols::site_start(&resolved) else {
            continue;
        };
        let mut sample = Sample {
            location_id: Vec::with_capacity(resolved.len() - first),
            value: vec![stack.objects.round() as i64, stack.bytes.round() as i64],
        };
        for (k, frames) in resolved.iter().enumerate().skip(first) {
            let skip = if k == first { skip } else { 0 };
            let addr = stack.addrs[k];
            let next_id = out.location.len() as u64 + 1;
            let id = *locations.entry((addr, skip)).or_insert(next_id);
            if id == next_id {
                let lines = frames
                    .iter()
                    .skip(skip)
                    .map(|f| {
                        let function_id = match functions.get(&f.function) {
                            Some(id) => *id,
                            None => {
                                let id = out.function.len() as u64 + 1;
                                out.function.push(Function {
                                    id,
                                    name: strings.get(&f.function),
                                    system_name: strings.get(&f.system_name),
                                    filename: strings.get(f.file.as_deref().unwrap_or("")),
                                });
                                functions.insert(Arc::clone(&f.function), id);
                                id
                            }
                        };
                        Line {
                            function_id,
                            line: i64::from(f.line),
                        }
                    })
                    .collect();
                let a = addr as u64;
                out.location.push(Location {
                    id,
                    mapping_id: mapping_id(&out.mapping, a),
                    address: a.saturating_sub(1),
                    line: lines,
                });
            }
            sample.location_id.push(id);
        }
        out.sample.push(sample);
    }
    out.string_table = strings.table;
    let encoded = prost::Message::encode_to_vec(&out);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    // Writing into a Vec cannot fail.
    let _ = gz.write_all(&encoded);
    gz.finish().unwrap_or_default()
}
