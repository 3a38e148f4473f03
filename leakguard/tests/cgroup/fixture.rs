//! `CgroupReader` over fixture trees laid out like `/`: v2, v1, hybrid, containers.
#![allow(clippy::unwrap_used)]

use leakguard::Error;
use leakguard::cgroup::{CgroupReader, CgroupStats, CgroupVersion};
use std::fs;
use std::path::Path;
use tempfile::TempDir;

const MIB: u64 = 1024 * 1024;
const V1_UNLIMITED: &str = "9223372036854771712\n";

const V2_MOUNT: &str = "30 23 0:26 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot\n";
const V1_MEMORY_MOUNT: &str = "35 31 0:32 / /sys/fs/cgroup/memory rw,nosuid,nodev,noexec,relatime shared:15 - cgroup cgroup rw,memory\n";
const HYBRID_MOUNTS: &str = "\
23 1 8:1 / / rw,relatime - ext4 /dev/root rw\n\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755\n\
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n\
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory\n\
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw\n";

/// A tree laid out like `/`.
struct Tree(TempDir);

impl Tree {
    fn new(proc_self_cgroup: &str, mountinfo: &str) -> Self {
        let tree = Tree(tempfile::tempdir().unwrap());
        tree.file("proc/self/cgroup", proc_self_cgroup);
        tree.file("proc/self/mountinfo", mountinfo);
        tree
    }

    fn file(&self, path: &str, content: &str) {
        let path = self.0.path().join(path);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, content).unwrap();
    }

    fn path(&self, path: &str) -> std::path::PathBuf {
        self.0.path().join(path)
    }

    fn read(&self) -> leakguard::Result<Option<CgroupStats>> {
        CgroupReader::with_root(self.0.path()).read(true)
    }

    /// A v2 cgroup directory with the usual memory files.
    fn v2_dir(&self, dir: &str, max: &str, high: &str) {
        self.file(&format!("{dir}/memory.max"), max);
        self.file(&format!("{dir}/memory.high"), high);
        self.file(&format!("{dir}/memory.current"), "4096\n");
        self.file(
            &format!("{dir}/memory.events"),
            "low 0\nhigh 0\nmax 0\noom 0\noom_kill 0\noom_group_kill 0\n",
        );
    }

    /// A v1 memory cgroup directory.
    fn v1_dir(&self, dir: &str, limit: &str) {
        self.file(&format!("{dir}/memory.limit_in_bytes"), limit);
        self.file(&format!("{dir}/memory.usage_in_bytes"), "8192\n");
        self.file(
            &format!("{dir}/memory.oom_control"),
            "oom_kill_disable 0\nunder_oom 0\noom_kill 0\n",
        );
    }
}

fn v2_tree(cgroup_path: &str) -> Tree {
    let tree = Tree::new(&format!("0::{cgroup_path}\n"), V2_MOUNT);
    tree.file(
        "sys/fs/cgroup/cgroup.controllers",
        "cpuset cpu io memory pids\n",
    );
    tree
}

fn expect_err_naming(result: leakguard::Result<Option<CgroupStats>>, file: &Path, parse: bool) {
    let err = result.expect_err("a broken tree must be an error");
    match &err {
        Error::Read { path, .. } if !parse => assert_eq!(path, file),
        Error::Parse { path, .. } if parse => assert_eq!(path, file),
        other => panic!("unexpected error: {other:?}"),
    }
    assert!(
        err.to_string().contains(&file.display().to_string()),
        "{err}"
    );
}

#[test]
fn v2_nested_limit_comes_from_the_smaller_parent() {
    let tree = v2_tree("/kubepods/pod1/ctr");
    tree.v2_dir("sys/fs/cgroup/kubepods", "max\n", "max\n");
    tree.v2_dir("sys/fs/cgroup/kubepods/pod1", "536870912\n", "max\n");
    tree.v2_dir("sys/fs/cgroup/kubepods/pod1/ctr", "1073741824\n", "max\n");
    tree.file("sys/fs/cgroup/kubepods/pod1/ctr/memory.current", "123456\n");
    tree.file(
        "sys/fs/cgroup/kubepods/pod1/ctr/memory.events",
        "low 0\nhigh 0\nmax 7\noom 3\noom_kill 2\n",
    );
    let stats = tree.read().unwrap().unwrap();
    assert_eq!(
        stats,
        CgroupStats {
            version: CgroupVersion::V2,
            path: "/kubepods/pod1/ctr".into(),
            limit_bytes: Some(512 * MIB),
            limit_source: Some("/kubepods/pod1".into()),
            high_bytes: None,
            current_bytes: Some(123_456),
            oom_kills: Some(2),
        }
    );
}

#[test]
fn v2_leaf_limit_wins_when_it_is_the_smallest() {
    let tree = v2_tree("/app");
    tree.v2_dir("sys/fs/cgroup/app", "268435456\n", "max\n");
    let stats = tree.read().unwrap().unwrap();
    assert_eq!(stats.limit_bytes, Some(256 * MIB));
    assert_eq!(stats.limit_source.as_deref(), Some("/app"));
}

#[test]
fn v2_max_everywhere_is_unlimited() {
    let tree = v2_tree("/system.slice/app.service");
    tree.v2_dir("sys/fs/cgroup/system.slice", "max\n", "max\n");
    tree.v2_dir("sys/fs/cgroup/system.slice/app.service", "max\n", "max\n");
    let stats = tree.read().unwrap().unwrap();
    assert_eq!(stats.version, CgroupVersion::V2);
    assert_eq!(stats.limit_bytes, None);
    assert_eq!(stats.limit_source, None);
    assert_eq!(stats.high_bytes, None);
    assert_eq!(stats.current_bytes, Some(4096));
    assert_eq!(stats.oom_kills, Some(0));
}

#[test]
fn v2_memory_high_is_the_smallest_up_the_tree() {
    let tree = v2_tree("/a/b");
    tree.v2_dir("sys/fs/cgroup/a", "max\n", "209715200\n");
    tree.v2_dir("sys/fs/cgroup/a/b", "1073741824\n", "314572800\n");
    let stats = tree.read().unwrap().unwrap();
    assert_eq!(stats.high_bytes, Some(200 * MIB));
    assert_eq!(stats.limit_bytes, Some(1024 * MIB));
    assert_eq!(stats.limit_source.as_deref(), Some("/a/b"));
}

#[test]
fn v1_sentinel_is_unlimited() {
    let tree = Tree::new(
        "11:memory:/user.slice/app\n3:cpu,cpuacct:/user.slice\n",
        V1_MEMORY_MOUNT,
    );
    tree.v1_dir("sys/fs/cgroup/memory", V1_UNLIMITED);
    tree.v1_dir("sys/fs/cgroup/memory/user.slice", V1_UNLIMITED);
    tree.v1_dir("sys/fs/cgroup/memory/user.slice/app", V1_UNLIMITED);
    tree.file(
        "sys/fs/cgroup/memory/user.slice/app/memory.oom_control",
        "oom_kill_disable 0\nunder_oom 0\noom_kill 4\n",
    );
    let stats = tree.read().unwrap().unwrap();
    assert_eq!(
        stats,
        CgroupStats {
            version: CgroupVersion::V1,
            path: "/user.slice/app".into(),
            limit_bytes: None,
            limit_source: None,
            high_bytes: None,
            current_bytes: Some(8192),
            oom_kills: Some(4),
        }
    );
}

#[test]
fn v1_nested_limit_comes_from_the_smaller_parent() {
    let tree = Tree::new("5:memory:/docker/abc/inner\n", V1_MEMORY_MOUNT);
    tree.v1_dir("sys/fs/cgroup/memory", V1_UNLIMITED);
    tree.v1_dir("sys/fs/cgroup/memory/docker", V1_UNLIMITED);
    tree.v1_dir("sys/fs/cgroup/memory/docker/abc", "268435456\n");
    tree.v1_dir("sys/fs/cgroup/memory/docker/abc/inner", "536870912\n");
    let stats = tree.read().unwrap().unwrap();
    assert_eq!(stats.version, CgroupVersion::V1);
    assert_eq!(stats.limit_bytes, Some(256 * MIB));
    assert_eq!(stats.limit_source.as_deref(), Some("/docker/abc"));
}

#[test]
fn v1_without_oom_kill_line_has_no_oom_count() {
    let tree = Tree::new("5:memory:/\n", V1_MEMORY_MOUNT);
    tree.v1_dir("sys/fs/cgroup/memory", V1_UNLIMITED);
    tree.file(
        "sys/fs/cgroup/memory/memory.oom_control",
        "oom_kill_disable 0\nunder_oom 0\n",
    );
    let stats = tree.read().unwrap().unwrap();
    assert_eq!(stats.oom_kills, None);
    assert_eq!(stats.current_bytes, Some(8192));
}

#[test]
fn hybrid_without_v2_memory_controller_uses_v1() {
    let tree = Tree::new(
        "9:name=systemd:/\n4:memory:/process_api/bfa630\n1:cpu:/\n0::/\n",
        HYBRID_MOUNTS,
    );
    tree.file("sys/fs/cgroup/unified/cgroup.controllers", "");
    tree.file("sys/fs/cgroup/unified/memory.pressure", "some avg10=0.00\n");
    tree.v1_dir("sys/fs/cgroup/memory", V1_UNLIMITED);
    tree.v1_dir("sys/fs/cgroup/memory/process_api", V1_UNLIMITED);
    tree.v1_dir("sys/fs/cgroup/memory/process_api/bfa630", "1073741824\n");
    let stats = tree.read().unwrap().unwrap();
    assert_eq!(stats.version, CgroupVersion::V1);
    assert_eq!(stats.path, "/process_api/bfa630");
    assert_eq!(stats.limit_bytes, Some(1024 * MIB));
    assert_eq!(stats.limit_source.as_deref(), Some("/process_api/bfa630"));
}

#[test]
fn v2_with_memory_enabled_wins_over_v1() {
    let mounts = format!(
        "{V1_MEMORY_MOUNT}{}",
        V2_MOUNT.replace("/sys/fs/cgroup ", "/sys/fs/cgroup/unified ")
    );
    let tree = Tree::new("4:memory:/v1\n0::/v2\n", &mounts);
    tree.v1_dir("sys/fs/cgroup/memory/v1", "1000\n");
    tree.v2_dir("sys/fs/cgroup/unified/v2", "2000\n", "max\n");
    let stats = tree.read().unwrap().unwrap();
    assert_eq!(stats.version, CgroupVersion::V2);
    assert_eq!(stats.limit_bytes, Some(2000));
}

#[test]
fn container_namespace_root_path_reads_the_mount_point() {
    // With a cgroup namespace, the container sees its own cgroup as "/" in both files.
    let tree = v2_tree("/");
    tree.v2_dir("sys/fs/cgroup", "268435456\n", "max\n");
    let stats = tree.read().unwrap().unwrap();
    assert_eq!(stats.path, "/");
    assert_eq!(stats.limit_bytes, Some(256 * MIB));
    assert_eq!(stats.limit_source.as_deref(), Some("/"));
}

#[test]
fn container_whose_mount_root_is_its_own_cgroup() {
    // Without a cgroup namespace (v1 Docker): the path is the full host path and the mount
    // shows that cgroup at its mount point.
    let mount =
        "40 31 0:32 /docker/abc /sys/fs/cgroup/memory ro,nosuid - cgroup cgroup rw,memory\n";
    let tree = Tree::new("4:memory:/docker/abc\n", mount);
    tree.v1_dir("sys/fs/cgroup/memory", "134217728\n");
    let stats = tree.read().unwrap().unwrap();
    assert_eq!(stats.limit_bytes, Some(128 * MIB));
    assert_eq!(stats.limit_source.as_deref(), Some("/docker/abc"));

    // The namespace path "/" with a mount whose root is the container's cgroup.
    let mount = "40 31 0:26 /kubepods/pod1/ctr /sys/fs/cgroup ro,nosuid - cgroup2 cgroup2 rw\n";
    let tree = Tree::new("0::/\n", mount);
    tree.v2_dir("sys/fs/cgroup", "67108864\n", "max\n");
    let stats = tree.read().unwrap().unwrap();
    assert_eq!(stats.limit_bytes, Some(64 * MIB));
    assert_eq!(stats.limit_source.as_deref(), Some("/kubepods/pod1/ctr"));
}

#[test]
fn path_below_the_mount_root_is_found_below_the_mount_point() {
    let mount = "40 31 0:26 /kubepods /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
    let tree = Tree::new("0::/kubepods/pod1/ctr\n", mount);
    tree.v2_dir("sys/fs/cgroup", "max\n", "max\n");
    tree.v2_dir("sys/fs/cgroup/pod1", "104857600\n", "max\n");
    tree.v2_dir("sys/fs/cgroup/pod1/ctr", "max\n", "max\n");
    let stats = tree.read().unwrap().unwrap();
    assert_eq!(stats.limit_bytes, Some(100 * MIB));
    assert_eq!(stats.limit_source.as_deref(), Some("/kubepods/pod1"));
}

#[test]
fn dot_dot_paths_never_leave_the_mount_point() {
    // A process outside its namespace's root: the path climbs above "/".
    let tree = v2_tree("/../../sibling");
    tree.v2_dir("sys/fs/cgroup", "33554432\n", "max\n");
    // A decoy where a naive join would land.
    tree.v2_dir("sibling", "1\n", "max\n");
    tree.v2_dir("sys/fs/sibling", "1\n", "max\n");
    let stats = tree.read().unwrap().unwrap();
    assert_eq!(stats.path, "/../../sibling");
    assert_eq!(stats.limit_bytes, Some(32 * MIB));
    assert_eq!(stats.limit_source.as_deref(), Some("/"));

    // A mount whose root is outside the namespace ("/.."), path "/" inside it.
    let mount = "40 31 0:26 /.. /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n";
    let tree = Tree::new("0::/\n", mount);
    tree.file("sys/fs/cgroup/cgroup.controllers", "memory\n");
    tree.v2_dir("sys/fs/cgroup", "16777216\n", "max\n");
    let stats = tree.read().unwrap().unwrap();
    assert_eq!(stats.limit_bytes, Some(16 * MIB));
}

#[test]
fn v2_root_cgroup_with_memory_controller_has_no_limit() {
    // The root cgroup has no memory.max or memory.current.
    let tree = v2_tree("/");
    let stats = tree.read().unwrap().unwrap();
    assert_eq!(stats.version, CgroupVersion::V2);
    assert_eq!(stats.limit_bytes, None);
    assert_eq!(stats.current_bytes, None);
    assert_eq!(stats.oom_kills, None);
}

#[test]
fn no_memory_controller_is_none() {
    // Pure v2 without the memory controller.
    let tree = Tree::new("0::/app\n", V2_MOUNT);
    tree.file("sys/fs/cgroup/cgroup.controllers", "cpu io pids\n");
    tree.file("sys/fs/cgroup/app/cpu.max", "max 100000\n");
    assert_eq!(tree.read().unwrap(), None);

    // v1 without a memory hierarchy.
    let mount = "32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu\n";
    let tree = Tree::new("1:cpu:/\n", mount);
    tree.file("sys/fs/cgroup/cpu/cpu.shares", "1024\n");
    assert_eq!(tree.read().unwrap(), None);

    // A memory line whose hierarchy is not mounted.
    let tree = Tree::new("4:memory:/x\n", "");
    assert_eq!(tree.read().unwrap(), None);

    // No cgroups at all.
    let tree = Tree::new("", "");
    let mut reader = CgroupReader::with_root(tree.0.path());
    assert_eq!(reader.read(true).unwrap(), None);
    assert_eq!(reader.read(false).unwrap(), None);
}

#[test]
fn garbage_limit_is_a_parse_error_naming_the_file() {
    let tree = v2_tree("/app");
    tree.v2_dir("sys/fs/cgroup/app", "lots\n", "max\n");
    expect_err_naming(
        tree.read(),
        &tree.path("sys/fs/cgroup/app/memory.max"),
        true,
    );

    let tree = Tree::new("4:memory:/app\n", V1_MEMORY_MOUNT);
    tree.v1_dir("sys/fs/cgroup/memory/app", "-1\n");
    expect_err_naming(
        tree.read(),
        &tree.path("sys/fs/cgroup/memory/app/memory.limit_in_bytes"),
        true,
    );

    let tree = v2_tree("/app");
    tree.v2_dir("sys/fs/cgroup/app", "max\n", "max\n");
    tree.file("sys/fs/cgroup/app/memory.current", "\u{1}\u{2}\n");
    expect_err_naming(
        tree.read(),
        &tree.path("sys/fs/cgroup/app/memory.current"),
        true,
    );

    let tree = v2_tree("/app");
    tree.v2_dir("sys/fs/cgroup/app", "max\n", "max\n");
    tree.file("sys/fs/cgroup/app/memory.events", "oom_kill many\n");
    expect_err_naming(
        tree.read(),
        &tree.path("sys/fs/cgroup/app/memory.events"),
        true,
    );
}

#[test]
fn garbage_proc_files_are_parse_errors_naming_the_file() {
    let tree = Tree::new("this is not a cgroup file\n", V2_MOUNT);
    expect_err_naming(tree.read(), &tree.path("proc/self/cgroup"), true);

    let tree = Tree::new("0::/\n", "30 23 0:26 / /sys/fs/cgroup no separator\n");
    expect_err_naming(tree.read(), &tree.path("proc/self/mountinfo"), true);

    let tree = Tree::new("0::/\n", "30 - cgroup2\n");
    expect_err_naming(tree.read(), &tree.path("proc/self/mountinfo"), true);
}

#[test]
fn missing_proc_files_are_read_errors_naming_the_file() {
    let tree = Tree::new("0::/\n", V2_MOUNT);
    fs::remove_file(tree.path("proc/self/cgroup")).unwrap();
    expect_err_naming(tree.read(), &tree.path("proc/self/cgroup"), false);

    let tree = Tree::new("0::/\n", V2_MOUNT);
    fs::remove_file(tree.path("proc/self/mountinfo")).unwrap();
    expect_err_naming(tree.read(), &tree.path("proc/self/mountinfo"), false);
}

#[test]
fn fast_reading_rereads_only_usage_and_oom_kills() {
    let tree = v2_tree("/app");
    tree.v2_dir("sys/fs/cgroup/app", "1073741824\n", "max\n");
    let mut reader = CgroupReader::with_root(tree.0.path());
    let full = reader.read(true).unwrap().unwrap();
    assert_eq!(full.current_bytes, Some(4096));

    tree.file("sys/fs/cgroup/app/memory.current", "999999\n");
    tree.file("sys/fs/cgroup/app/memory.events", "oom 1\noom_kill 1\n");
    tree.file("sys/fs/cgroup/app/memory.max", "2147483648\n");
    let fast = reader.read(false).unwrap().unwrap();
    assert_eq!(fast.current_bytes, Some(999_999));
    assert_eq!(fast.oom_kills, Some(1));
    assert_eq!(fast.limit_bytes, Some(1024 * MIB));

    let full = reader.read(true).unwrap().unwrap();
    assert_eq!(full.limit_bytes, Some(2048 * MIB));
}

#[test]
fn fast_reading_re_resolves_when_the_cgroup_is_gone() {
    let tree = v2_tree("/old");
    tree.v2_dir("sys/fs/cgroup/old", "1000\n", "max\n");
    tree.v2_dir("sys/fs/cgroup/new", "2000\n", "max\n");
    let mut reader = CgroupReader::with_root(tree.0.path());
    assert_eq!(reader.read(true).unwrap().unwrap().limit_bytes, Some(1000));
    // The process moved and its old cgroup was removed.
    tree.file("proc/self/cgroup", "0::/new\n");
    tree.file("sys/fs/cgroup/old/memory.current", "not a number\n");
    let fast = reader.read(false).unwrap().unwrap();
    assert_eq!(fast.path, "/new");
    assert_eq!(fast.limit_bytes, Some(2000));
}

#[test]
fn paths_with_spaces_in_mountinfo_are_unescaped() {
    let mount = "30 23 0:26 / /sys/fs/cgroup\\040v2 rw - cgroup2 cgroup2 rw\n";
    let tree = Tree::new("0::/app\n", mount);
    tree.v2_dir("sys/fs/cgroup v2/app", "4096\n", "max\n");
    let stats = tree.read().unwrap().unwrap();
    assert_eq!(stats.limit_bytes, Some(4096));
}

#[test]
fn full_reading_follows_a_move_to_another_cgroup() {
    let tree = v2_tree("/a");
    tree.v2_dir("sys/fs/cgroup/a", "1000\n", "max\n");
    tree.v2_dir("sys/fs/cgroup/b", "2000\n", "500\n");
    let mut reader = CgroupReader::with_root(tree.0.path());
    assert_eq!(reader.read(true).unwrap().unwrap().limit_bytes, Some(1000));
    tree.file("proc/self/cgroup", "0::/b\n");
    // A fast reading still reads the old cgroup (it still exists).
    assert_eq!(reader.read(false).unwrap().unwrap().path, "/a");
    let full = reader.read(true).unwrap().unwrap();
    assert_eq!(full.path, "/b");
    assert_eq!(full.limit_bytes, Some(2000));
    assert_eq!(full.high_bytes, Some(500));
}

#[test]
fn full_reading_rereads_limits_up_the_tree() {
    let tree = v2_tree("/a/b");
    tree.v2_dir("sys/fs/cgroup/a", "max\n", "max\n");
    tree.v2_dir("sys/fs/cgroup/a/b", "max\n", "max\n");
    let mut reader = CgroupReader::with_root(tree.0.path());
    assert_eq!(reader.read(true).unwrap().unwrap().limit_bytes, None);
    tree.file("sys/fs/cgroup/a/memory.max", "777\n");
    let full = reader.read(true).unwrap().unwrap();
    assert_eq!(full.limit_bytes, Some(777));
    assert_eq!(full.limit_source.as_deref(), Some("/a"));
}
