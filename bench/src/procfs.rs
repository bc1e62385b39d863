//! What the kernel tells about a process tree: CPU time, resident memory, the file limit, the machine.

use std::fs;
use std::io;
use std::time::Duration;

/// Fields of `/proc/<pid>/stat` after the command name.
struct Stat {
    ppid: u32,
    /// utime + stime + cutime + cstime, in clock ticks: the process's threads (live and exited) and its
    /// reaped children.
    ticks: u64,
}

fn stat(pid: u32) -> Option<Stat> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name is in parentheses and may itself hold spaces or parentheses.
    let after = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    // fields[0] is field 3 (state) of proc(5).
    let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
    Some(Stat {
        ppid: u32::try_from(field(4)?).ok()?,
        ticks: field(14)? + field(15)? + field(16)? + field(17)?,
    })
}

/// A process that used a noticeable share of a CPU while sampled.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Busy {
    /// Process id.
    pub pid: u32,
    /// Command name.
    pub comm: String,
    /// Nice value.
    pub nice: i64,
    /// Share of one CPU, in percent.
    pub cpu_percent: f64,
}

/// Processes outside this process's tree that used more than `threshold` percent of a CPU over
/// `sample`. A busy neighbour, even a niced one, skews every figure: the scheduler may leave it a whole
/// core and pack the benchmark onto the other.
pub fn busy_processes(sample: Duration, threshold: f64) -> Vec<Busy> {
    let read = || -> Vec<(u32, u64)> {
        let Ok(dir) = fs::read_dir("/proc") else {
            return Vec::new();
        };
        dir.flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
            .filter_map(|pid| Some((pid, stat(pid)?.ticks)))
            .collect()
    };
    let before = read();
    std::thread::sleep(sample);
    let mine = tree(std::process::id());
    let hz = clock_ticks_per_second() as f64;
    let mut busy: Vec<Busy> = read()
        .into_iter()
        .filter(|(pid, _)| !mine.contains(pid))
        .filter_map(|(pid, after)| {
            let (_, b) = before.iter().find(|(p, _)| *p == pid)?;
            let cpu_percent = after.saturating_sub(*b) as f64 / hz / sample.as_secs_f64() * 100.0;
            let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let comm = text.get(text.find('(')? + 1..text.rfind(')')?)?.to_owned();
            let nice = text[text.rfind(')')? + 1..]
                .split_whitespace()
                .nth(16)?
                .parse()
                .ok()?;
            (cpu_percent > threshold).then_some(Busy {
                pid,
                comm,
                nice,
                cpu_percent,
            })
        })
        .collect();
    busy.sort_by(|a, b| b.cpu_percent.total_cmp(&a.cpu_percent));
    busy
}

/// `pid` and every live descendant.
pub fn tree(pid: u32) -> Vec<u32> {
    let mut parents: Vec<(u32, u32)> = Vec::new();
    if let Ok(dir) = fs::read_dir("/proc") {
        for entry in dir.flatten() {
            let Some(child) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some(s) = stat(child) {
                parents.push((child, s.ppid));
            }
        }
    }
    let mut tree = vec![pid];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(
            parents
                .iter()
                .filter(|&&(_, p)| p == parent)
                .map(|&(c, _)| c),
        );
        i += 1;
    }
    tree
}

fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(hz).ok().filter(|&hz| hz > 0).unwrap_or(100)
}

/// TCP sockets in TIME_WAIT in this network namespace (`tw` in `/proc/net/sockstat`).
pub fn time_wait_sockets() -> Option<u64> {
    let sockstat = std::fs::read_to_string("/proc/net/sockstat").ok()?;
    parse_time_wait(&sockstat)
}

fn parse_time_wait(sockstat: &str) -> Option<u64> {
    let tcp = sockstat.lines().find_map(|l| l.strip_prefix("TCP:"))?;
    let mut fields = tcp.split_whitespace();
    while let Some(key) = fields.next() {
        let value = fields.next()?;
        if key == "tw" {
            return value.parse().ok();
        }
    }
    None
}

/// The kernel's limit on TIME_WAIT sockets (`net.ipv4.tcp_max_tw_buckets`).
pub fn max_time_wait_sockets() -> Option<u64> {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_max_tw_buckets")
        .ok()?
        .trim()
        .parse()
        .ok()
}

/// CPU time (user + system) used so far by `pid` and its descendants, threads included.
pub fn cpu_time(pid: u32) -> Duration {
    let ticks: u64 = tree(pid)
        .iter()
        .filter_map(|&p| stat(p))
        .map(|s| s.ticks)
        .sum();
    Duration::from_secs_f64(ticks as f64 / clock_ticks_per_second() as f64)
}

/// Resident memory (`VmRSS`) of `pid` and its descendants, in KiB.
pub fn rss_kib(pid: u32) -> u64 {
    tree(pid)
        .iter()
        .filter_map(|&p| fs::read_to_string(format!("/proc/{p}/status")).ok())
        .filter_map(|status| {
            let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok()
        })
        .sum()
}

/// Raises this process's soft limit on open files to its hard limit; children inherit it. Returns the
/// new soft limit.
pub fn raise_nofile_limit() -> io::Result<u64> {
    rlimit::increase_nofile_limit(u64::MAX)
}

/// Restricts the calling thread, and the threads and processes it starts afterwards, to `cpus`
/// (all CPUs when empty). Allocates nothing, so a child may call it between fork and exec.
pub fn set_affinity(cpus: &[usize]) -> io::Result<()> {
    // SAFETY: cpu_set_t is plain data; CPU_ZERO/CPU_SET only write inside it, and sched_setaffinity reads
    // it for the calling thread (pid 0).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_ZERO(&mut set);
        let size = libc::CPU_SETSIZE as usize;
        for cpu in 0..size {
            if cpus.is_empty() || cpus.contains(&cpu) {
                libc::CPU_SET(cpu, &mut set);
            }
        }
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The machine's CPU time so far, from the `cpu` line of `/proc/stat`, in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTimes {
    /// Time the hypervisor ran something else while a virtual CPU of this machine wanted to run.
    pub steal: u64,
    /// Every state: user, nice, system, idle, iowait, irq, softirq and steal.
    pub total: u64,
}

impl CpuTimes {
    /// The machine's times now; `None` where `/proc/stat` is missing or unreadable.
    pub fn now() -> Option<CpuTimes> {
        CpuTimes::parse(&fs::read_to_string("/proc/stat").ok()?)
    }

    /// The times in the text of `/proc/stat`: its first line, `cpu  user nice system idle iowait irq
    /// softirq steal guest guest_nice` (guest time is already counted in user and nice).
    pub fn parse(stat: &str) -> Option<CpuTimes> {
        let mut fields = stat.lines().next()?.split_whitespace();
        if fields.next()? != "cpu" {
            return None;
        }
        let ticks: Vec<u64> = fields
            .take(8)
            .map(|f| f.parse().ok())
            .collect::<Option<_>>()?;
        Some(CpuTimes {
            steal: *ticks.get(7)?,
            total: ticks.iter().sum(),
        })
    }

    /// The share of all CPU time from `self` to `later` that was stolen, in percent; `None` when no time
    /// passed (or the counters went backwards).
    pub fn steal_percent_until(self, later: CpuTimes) -> Option<f64> {
        let total = later.total.checked_sub(self.total).filter(|&t| t > 0)?;
        let steal = later.steal.checked_sub(self.steal)?;
        Some(steal as f64 / total as f64 * 100.0)
    }
}

/// The machine, as printed at the top of a report.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Machine {
    /// Logical CPUs available.
    pub nproc: usize,
    /// `uname -r`.
    pub kernel: String,
    /// The CPU model from /proc/cpuinfo.
    pub cpu: String,
    /// Total memory in MiB.
    pub memory_mib: u64,
}

impl Machine {
    /// Reads the machine's description.
    pub fn describe() -> Machine {
        let read = |p: &str| fs::read_to_string(p).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        let cpu = cpuinfo
            .lines()
            .find(|l| l.starts_with("model name"))
            .and_then(|l| l.split_once(':'))
            .map_or_else(|| "unknown".to_owned(), |(_, v)| v.trim().to_owned());
        let memory_mib = read("/proc/meminfo")
            .lines()
            .find(|l| l.starts_with("MemTotal:"))
            .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
            .unwrap_or(0)
            / 1024;
        Machine {
            nproc: std::thread::available_parallelism().map_or(1, |n| n.get()),
            kernel: read("/proc/sys/kernel/osrelease").trim().to_owned(),
            cpu,
            memory_mib,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_uses_cpu_and_memory() {
        let pid = std::process::id();
        let before = cpu_time(pid);
        let mut x = 0u64;
        let start = std::time::Instant::now();
        while start.elapsed() < Duration::from_millis(60) {
            x = x.wrapping_mul(31).wrapping_add(7);
        }
        std::hint::black_box(x);
        assert!(cpu_time(pid) > before);
        assert!(rss_kib(pid) > 100);
        assert_eq!(tree(pid)[0], pid);
    }

    #[test]
    fn steal_is_the_stolen_share_of_all_cpu_time() {
        let stat = |steal: u64| {
            format!("cpu  100 0 50 800 10 0 5 {steal} 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n")
        };
        let before = CpuTimes::parse(&stat(35));
        assert_eq!(
            before,
            Some(CpuTimes {
                steal: 35,
                total: 1000
            })
        );
        let later = CpuTimes::parse("cpu  130 0 60 900 10 0 5 95 0 0\n");
        let share = before
            .zip(later)
            .and_then(|(b, l)| b.steal_percent_until(l));
        // 200 ticks passed, 60 of them stolen.
        assert!(share.is_some_and(|p| (p - 30.0).abs() < 1e-9), "{share:?}");
        assert_eq!(before.and_then(|b| b.steal_percent_until(b)), None);
        assert_eq!(CpuTimes::parse("cpu0 1 2 3"), None);
        assert_eq!(CpuTimes::parse("cpu  1 2 x 4 5 6 7 8"), None);
        assert_eq!(CpuTimes::parse("cpu  1 2 3 4"), None);
        assert!(CpuTimes::now().is_some(), "/proc/stat is readable on Linux");
    }

    #[test]
    fn time_wait_is_the_tw_field_of_the_tcp_line() {
        let sockstat =
            "sockets: used 120\nTCP: inuse 5 orphan 0 tw 83739 alloc 9 mem 2\nUDP: inuse 0 mem 0\n";
        assert_eq!(parse_time_wait(sockstat), Some(83_739));
        assert_eq!(parse_time_wait("TCP: inuse 5 orphan 0\n"), None);
        assert_eq!(parse_time_wait("TCP: inuse 5 tw\n"), None);
        assert_eq!(parse_time_wait("UDP: inuse 0 tw 4\n"), None);
        assert!(
            time_wait_sockets().is_some(),
            "/proc/net/sockstat is readable on Linux"
        );
    }
}
