//! How many CPUs this process may keep busy, so the default worker count fits the share of
//! the machine it is given rather than the machine it runs on: a pod limited to 500m on a
//! 16-core node gets one worker, not sixteen that the kernel would throttle in turn.
//!
//! Two limits count: the CPUs the process may run on (its affinity mask: `taskset`, a
//! cpuset) and the CPU time its cgroup and the cgroup's ancestors may use per period (a
//! container's CPU limit: cgroup v2 `cpu.max`, v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`).
//! The standard library's `available_parallelism` reads both but rounds the quota down, so a
//! 1.5-CPU limit gets one worker and leaves a third of what was paid for unused; here it is
//! rounded up, as Go (1.25) sizes GOMAXPROCS. The cgroup is found from `/proc/self/cgroup`
//! and the hierarchies' mounts from `/proc/self/mountinfo`, so a v2 hierarchy mounted beside
//! v1 ones (`/sys/fs/cgroup/unified`) and a container's view of its own subtree (the mount's
//! root is the container's cgroup) are both read where they are.

use std::fmt;
use std::path::{Component, Path};

use procfs::FromBufRead;
use procfs::ProcessCGroups;
use procfs::process::{MountInfos, Process};

/// CPU time a cgroup may use: `runtime_us` every `period_us`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Microseconds of CPU time per period, across all the group's threads.
    runtime_us: u64,
    /// The period the runtime is granted in, in microseconds (never zero).
    period_us: u64,
}

impl Quota {
    /// A quota of `runtime_us` per `period_us`; `None` for a zero period, which the kernel
    /// never reports.
    pub fn new(runtime_us: u64, period_us: u64) -> Option<Self> {
        (period_us > 0).then_some(Self {
            runtime_us,
            period_us,
        })
    }

    /// The quota in whole CPUs, rounded up: 1.5 CPUs keep two threads busy three quarters of
    /// the time, where one thread would leave half a CPU unused.
    pub fn cpus_rounded_up(self) -> usize {
        usize::try_from(self.runtime_us.div_ceil(self.period_us)).unwrap_or(usize::MAX)
    }

    /// Whether this quota allows less CPU time than `other` (compared exactly, periods may
    /// differ).
    fn is_tighter_than(self, other: Self) -> bool {
        u128::from(self.runtime_us) * u128::from(other.period_us)
            < u128::from(other.runtime_us) * u128::from(self.period_us)
    }
}

impl fmt::Display for Quota {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cpus = self.runtime_us as f64 / self.period_us as f64;
        write!(f, "{cpus:.2} CPUs")
    }
}

/// What the process may use of the machine's CPUs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuBudget {
    /// CPUs the process may run on (its affinity mask).
    pub cpus: usize,
    /// The tightest CPU quota of its cgroup and the cgroup's ancestors, if any is set.
    pub quota: Option<Quota>,
}

impl CpuBudget {
    /// This process's budget, read from `/proc`. What cannot be read counts as no limit: a
    /// process outside any cgroup with a quota, or on a system without `/proc`, gets one
    /// worker per CPU as before.
    pub fn of_this_process() -> Self {
        let myself = Process::myself().ok();
        let cpus = myself
            .as_ref()
            .and_then(|p| p.status().ok()?.cpus_allowed_list)
            .map(|ranges| {
                ranges
                    .iter()
                    .map(|&(first, last)| cpus_in(first, last))
                    .sum()
            })
            .filter(|&cpus: &usize| cpus > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
        let quota = (|| {
            let cgroups = std::fs::read("/proc/self/cgroup").ok()?;
            let cgroups = ProcessCGroups::from_buf_read(cgroups.as_slice()).ok()?;
            quota(&cgroups, &myself?.mountinfo().ok()?)
        })();
        Self { cpus, quota }
    }

    /// The default worker count: one per CPU the process may run on, but no more than its
    /// quota rounded up, and at least one.
    pub fn workers(self) -> usize {
        let by_quota = self.quota.map_or(usize::MAX, Quota::cpus_rounded_up);
        self.cpus.min(by_quota).max(1)
    }
}

impl fmt::Display for CpuBudget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.quota {
            Some(quota) => write!(f, "{} CPUs, cgroup quota {quota}", self.cpus),
            None => write!(f, "{} CPUs, no cgroup quota", self.cpus),
        }
    }
}

/// How many CPUs the inclusive range `first..=last` of an affinity list holds.
fn cpus_in(first: u32, last: u32) -> usize {
    usize::try_from(last.saturating_sub(first)).map_or(0, |n| n + 1)
}

/// The tightest quota on the CPU controller's groups in `cgroups` (`/proc/self/cgroup`) and
/// their ancestors up to each hierarchy's mount, found through `mounts`
/// (`/proc/self/mountinfo`); `None` if no level sets one.
pub fn quota(cgroups: &ProcessCGroups, mounts: &MountInfos) -> Option<Quota> {
    let mut tightest: Option<Quota> = None;
    for group in &cgroups.0 {
        let unified = group.hierarchy == 0 && group.controllers.is_empty();
        if !unified && !group.controllers.iter().any(|c| c == "cpu") {
            continue;
        }
        for mount in mounts {
            let serves_group = if unified {
                mount.fs_type == "cgroup2"
            } else {
                mount.fs_type == "cgroup" && mount.super_options.contains_key("cpu")
            };
            if !serves_group {
                continue;
            }
            // The mount shows the hierarchy from its root down (a container sees its own
            // group as the root); a group outside that view, or above it, cannot be read.
            let Ok(inside) = Path::new(&group.pathname).strip_prefix(&mount.root) else {
                continue;
            };
            if inside
                .components()
                .any(|c| !matches!(c, Component::Normal(_)))
            {
                continue;
            }
            let mut dir = mount.mount_point.join(inside);
            loop {
                if let Some(found) = read_quota(&dir, unified)
                    && tightest.is_none_or(|t| found.is_tighter_than(t))
                {
                    tightest = Some(found);
                }
                if dir == mount.mount_point || !dir.pop() {
                    break;
                }
            }
        }
    }
    tightest
}

/// The quota set on the group at `dir`, if any (`unified`: cgroup v2's file, else v1's).
fn read_quota(dir: &Path, unified: bool) -> Option<Quota> {
    let read = |name| std::fs::read_to_string(dir.join(name)).ok();
    if unified {
        parse_cpu_max(&read("cpu.max")?)
    } else {
        parse_cfs(&read("cpu.cfs_quota_us")?, &read("cpu.cfs_period_us")?)
    }
}

/// cgroup v2 `cpu.max`: `"$MAX $PERIOD"`, `max` for no limit.
pub fn parse_cpu_max(text: &str) -> Option<Quota> {
    let mut fields = text.split_whitespace();
    let runtime = fields.next()?.parse().ok()?;
    let period = fields.next()?.parse().ok()?;
    Quota::new(runtime, period)
}

/// cgroup v1 `cpu.cfs_quota_us` (`-1` for no limit) and `cpu.cfs_period_us`.
pub fn parse_cfs(quota: &str, period: &str) -> Option<Quota> {
    Quota::new(quota.trim().parse().ok()?, period.trim().parse().ok()?)
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;

    fn quota_of(runtime_us: u64, period_us: u64) -> Option<Quota> {
        Quota::new(runtime_us, period_us)
    }

    /// Writes `files` (path relative to `root`, content) and returns the quota `quota` finds
    /// for the `/proc/self/cgroup` text `cgroups` and the mountinfo lines `mounts`, in which
    /// `{root}` stands for the directory.
    fn quota_in_tree(files: &[(&str, &str)], cgroups: &str, mounts: &str) -> Option<Quota> {
        let root = tempfile::tempdir().unwrap();
        for (path, content) in files {
            let path = root.path().join(path);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, content).unwrap();
        }
        let mounts = mounts.replace("{root}", root.path().to_str().unwrap());
        quota(
            &ProcessCGroups::from_buf_read(cgroups.as_bytes()).unwrap(),
            &MountInfos::from_buf_read(mounts.as_bytes()).unwrap(),
        )
    }

    #[test]
    fn cpu_max_reads_a_limit_and_max_as_none() {
        assert_eq!(parse_cpu_max("150000 100000\n"), quota_of(150_000, 100_000));
        assert_eq!(parse_cpu_max("max 100000\n"), None);
        assert_eq!(parse_cpu_max("50000 0\n"), None);
        assert_eq!(parse_cpu_max("50000\n"), None);
        assert_eq!(parse_cpu_max(""), None);
    }

    #[test]
    fn cfs_files_read_a_limit_and_minus_one_as_none() {
        assert_eq!(parse_cfs("30000\n", "100000\n"), quota_of(30_000, 100_000));
        assert_eq!(parse_cfs("-1\n", "100000\n"), None);
        assert_eq!(parse_cfs("30000\n", "0\n"), None);
    }

    #[test]
    fn a_quota_counts_whole_cpus_rounded_up() {
        let cpus = |runtime, period| Quota::new(runtime, period).unwrap().cpus_rounded_up();
        assert_eq!(cpus(30_000, 100_000), 1);
        assert_eq!(cpus(100_000, 100_000), 1);
        assert_eq!(cpus(150_000, 100_000), 2);
        assert_eq!(cpus(200_000, 100_000), 2);
        assert_eq!(cpus(200_001, 100_000), 3);
        assert_eq!(cpus(1_000_000, 250_000), 4);
    }

    #[test]
    fn workers_follow_the_quota_within_the_cpus_and_never_fall_to_zero() {
        let budget = |cpus, quota| CpuBudget { cpus, quota }.workers();
        assert_eq!(budget(16, quota_of(50_000, 100_000)), 1, "500m on 16 CPUs");
        assert_eq!(
            budget(16, quota_of(150_000, 100_000)),
            2,
            "1500m on 16 CPUs"
        );
        assert_eq!(
            budget(2, quota_of(800_000, 100_000)),
            2,
            "8 CPUs' quota on 2 CPUs"
        );
        assert_eq!(budget(4, None), 4, "no quota: one per CPU");
        assert_eq!(budget(4, quota_of(0, 100_000)), 1, "at least one");
    }

    #[test]
    fn the_report_says_the_cpus_and_the_quota() {
        let limited = CpuBudget {
            cpus: 16,
            quota: quota_of(150_000, 100_000),
        };
        assert_eq!(limited.to_string(), "16 CPUs, cgroup quota 1.50 CPUs");
        let free = CpuBudget {
            cpus: 2,
            quota: None,
        };
        assert_eq!(free.to_string(), "2 CPUs, no cgroup quota");
    }

    #[test]
    fn v1_quota_on_an_ancestor_counts_beside_a_unified_mount() {
        // A hybrid host (this project's own CI machine is one): the CPU controller in a v1
        // hierarchy, an empty v2 one mounted at unified/; the quota set on the pod, not the
        // container's own group.
        let found = quota_in_tree(
            &[
                ("cpu,cpuacct/cpu.cfs_quota_us", "-1\n"),
                ("cpu,cpuacct/cpu.cfs_period_us", "100000\n"),
                ("cpu,cpuacct/kubepods/pod1/cpu.cfs_quota_us", "50000\n"),
                ("cpu,cpuacct/kubepods/pod1/cpu.cfs_period_us", "100000\n"),
                ("cpu,cpuacct/kubepods/pod1/ctr/cpu.cfs_quota_us", "-1\n"),
                (
                    "cpu,cpuacct/kubepods/pod1/ctr/cpu.cfs_period_us",
                    "100000\n",
                ),
                ("unified/kubepods/pod1/ctr/cgroup.procs", ""),
            ],
            "12:memory:/kubepods/pod1/ctr\n4:cpu,cpuacct:/kubepods/pod1/ctr\n\
             1:name=systemd:/kubepods/pod1/ctr\n0::/kubepods/pod1/ctr\n",
            "30 25 0:26 / {root}/unified rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n\
             31 25 0:27 / {root}/cpu,cpuacct rw,nosuid - cgroup cgroup rw,cpu,cpuacct\n\
             32 25 0:28 / {root}/memory rw,nosuid - cgroup cgroup rw,memory\n",
        );
        assert_eq!(found, quota_of(50_000, 100_000));
    }

    #[test]
    fn v2_takes_the_tightest_level_of_the_path() {
        let found = quota_in_tree(
            &[
                ("system.slice/cpu.max", "150000 100000\n"),
                ("system.slice/app.service/cpu.max", "300000 100000\n"),
                ("system.slice/app.service/inner/cpu.max", "max 100000\n"),
            ],
            "0::/system.slice/app.service/inner\n",
            "24 1 0:22 / {root} rw,nosuid - cgroup2 cgroup2 rw\n",
        );
        assert_eq!(found, quota_of(150_000, 100_000));
    }

    #[test]
    fn a_container_reads_its_own_group_at_the_mount_and_nothing_above_it() {
        // The container's mount shows its group as the root; the host's files beside the
        // mount point are not the container's and must not be read.
        let found = quota_in_tree(
            &[
                ("cpu.cfs_quota_us", "1000\n"),
                ("cpu.cfs_period_us", "100000\n"),
                ("cpu/cpu.cfs_quota_us", "25000\n"),
                ("cpu/cpu.cfs_period_us", "100000\n"),
            ],
            "3:cpu:/kubepods/pod1/ctr\n",
            "40 30 0:27 /kubepods/pod1/ctr {root}/cpu ro,nosuid - cgroup cgroup rw,cpu\n",
        );
        assert_eq!(found, quota_of(25_000, 100_000));
    }

    #[test]
    fn no_quota_anywhere_or_no_cpu_hierarchy_is_none() {
        let unlimited = quota_in_tree(
            &[
                ("cpu/cpu.cfs_quota_us", "-1\n"),
                ("cpu/cpu.cfs_period_us", "100000\n"),
                ("cpu/app/cpu.cfs_quota_us", "-1\n"),
                ("cpu/app/cpu.cfs_period_us", "100000\n"),
            ],
            "2:cpu:/app\n0::/\n",
            "31 25 0:27 / {root}/cpu rw - cgroup cgroup rw,cpu\n",
        );
        assert_eq!(unlimited, None);
        let elsewhere = quota_in_tree(
            &[("memory/cpu.max", "1000 100000\n")],
            "5:memory:/\n",
            "32 25 0:28 / {root}/memory rw - cgroup cgroup rw,memory\n",
        );
        assert_eq!(elsewhere, None, "only the CPU controller's groups count");
    }

    #[test]
    fn a_group_outside_the_mounted_view_is_not_read() {
        let found = quota_in_tree(
            &[
                ("cpu/cpu.cfs_quota_us", "20000\n"),
                ("cpu/cpu.cfs_period_us", "100000\n"),
            ],
            "0::/../sibling\n3:cpu:/other/group\n",
            "24 1 0:22 / {root} rw - cgroup2 cgroup2 rw\n\
             40 30 0:27 /kubepods/pod1/ctr {root}/cpu rw - cgroup cgroup rw,cpu\n",
        );
        assert_eq!(found, None);
    }
}
