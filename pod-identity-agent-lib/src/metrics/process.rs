//! The standard `process_*` series of the Prometheus clients, read from `/proc/self` (Linux).

use std::fmt::Write as _;

/// Clock ticks per second of the times in `/proc/<pid>/stat` (`USER_HZ`, 100 on the
/// architectures Linux exposes to user space).
const USER_HZ: f64 = 100.0;

/// Which text format to write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Format {
    Prometheus,
    OpenMetrics,
}

/// What the process series report.
#[derive(Clone, Debug, Default, PartialEq)]
pub(super) struct ProcessStats {
    cpu_seconds: f64,
    resident_bytes: u64,
    virtual_bytes: u64,
    start_time_seconds: f64,
    open_fds: Option<u64>,
    max_fds: Option<u64>,
}

impl ProcessStats {
    /// This process's figures, or `None` where `/proc` cannot be read.
    pub(super) fn read() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let boot_time = std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|text| boot_time(&text))?;
        let mut stats = Self::parse(&stat, &status, boot_time)?;
        stats.open_fds = std::fs::read_dir("/proc/self/fd")
            .ok()
            .map(|entries| entries.count() as u64);
        stats.max_fds = std::fs::read_to_string("/proc/self/limits")
            .ok()
            .and_then(|text| max_open_files(&text));
        Some(stats)
    }

    /// Parses `/proc/self/stat` and `/proc/self/status`; `boot_time` is `btime` of `/proc/stat`.
    fn parse(stat: &str, status: &str, boot_time: u64) -> Option<Self> {
        // The command name (field 2) is in parentheses and may hold spaces and ')'.
        let fields = stat
            .get(stat.rfind(')')? + 1..)?
            .split_ascii_whitespace()
            .collect::<Vec<_>>();
        // `fields[0]` is field 3 (state): field N is `fields[N - 3]`.
        let field = |n: usize| fields.get(n - 3).and_then(|f| f.parse::<u64>().ok());
        let ticks = field(14)?.saturating_add(field(15)?);
        let start_ticks = field(22)?;
        let virtual_bytes = field(23)?;
        let resident_kib = status
            .lines()
            .find_map(|line| line.strip_prefix("VmRSS:"))
            .and_then(|rest| rest.split_ascii_whitespace().next())
            .and_then(|kib| kib.parse::<u64>().ok())
            .unwrap_or(0);
        Some(Self {
            cpu_seconds: ticks as f64 / USER_HZ,
            resident_bytes: resident_kib.saturating_mul(1024),
            virtual_bytes,
            start_time_seconds: boot_time as f64 + start_ticks as f64 / USER_HZ,
            open_fds: None,
            max_fds: None,
        })
    }

    /// The series in `format`, without `# EOF`.
    pub(super) fn encode(&self, format: Format) -> String {
        let mut out = String::new();
        // The CPU counter is `process_cpu_seconds_total` in both formats: its 0.0.4 name carries
        // the suffix (as client_golang names it), and OpenMetrics adds it to the family name.
        let family = match format {
            Format::Prometheus => "process_cpu_seconds_total",
            Format::OpenMetrics => "process_cpu_seconds",
        };
        let _ = write!(
            out,
            "# HELP {family} Total user and system CPU time spent in seconds.\n\
             # TYPE {family} counter\n\
             process_cpu_seconds_total {}\n",
            self.cpu_seconds
        );
        let mut gauge = |name: &str, help: &str, value: String| {
            let _ = write!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}\n"
            );
        };
        if let Some(open) = self.open_fds {
            gauge(
                "process_open_fds",
                "Number of open file descriptors.",
                open.to_string(),
            );
        }
        if let Some(max) = self.max_fds {
            gauge(
                "process_max_fds",
                "Maximum number of open file descriptors.",
                max.to_string(),
            );
        }
        gauge(
            "process_virtual_memory_bytes",
            "Virtual memory size in bytes.",
            self.virtual_bytes.to_string(),
        );
        gauge(
            "process_resident_memory_bytes",
            "Resident memory size in bytes.",
            self.resident_bytes.to_string(),
        );
        gauge(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            self.start_time_seconds.to_string(),
        );
        out
    }
}

/// `btime` (boot time, epoch seconds) of `/proc/stat`.
fn boot_time(proc_stat: &str) -> Option<u64> {
    proc_stat
        .lines()
        .find_map(|line| line.strip_prefix("btime "))
        .and_then(|rest| rest.trim().parse().ok())
}

/// The soft limit of `Max open files` in `/proc/self/limits`.
fn max_open_files(limits: &str) -> Option<u64> {
    limits
        .lines()
        .find_map(|line| line.strip_prefix("Max open files"))
        .and_then(|rest| rest.split_ascii_whitespace().next())
        .and_then(|soft| soft.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "4242 (pod (identity)) S 1 4242 4242 0 -1 4194560 1200 0 0 0 \
        250 130 0 0 20 0 9 0 123456 104857600 3000 18446744073709551615 1 1 0 0 0 0 0 \
        0 0 0 0 0 17 1 0 0 0 0 0";
    const STATUS: &str = "Name:\tpod-identity\nVmPeak:\t  102400 kB\nVmRSS:\t   12000 kB\n";
    const LIMITS: &str = "Limit                     Soft Limit           Hard Limit           Units     \n\
        Max cpu time              unlimited            unlimited            seconds   \n\
        Max open files            1048576              1048576              files     \n";

    #[test]
    fn proc_files_parse() {
        let stats = ProcessStats::parse(STAT, STATUS, 1_700_000_000).unwrap();
        assert_eq!(stats.cpu_seconds, 3.8);
        assert_eq!(stats.virtual_bytes, 104_857_600);
        assert_eq!(stats.resident_bytes, 12_000 * 1024);
        assert!((stats.start_time_seconds - 1_700_001_234.56).abs() < 1e-6);
        assert_eq!(max_open_files(LIMITS), Some(1_048_576));
        assert_eq!(
            boot_time("cpu 1 2 3\nbtime 1700000000\n"),
            Some(1_700_000_000)
        );
    }

    #[test]
    fn garbage_is_none_not_a_panic() {
        for stat in [
            "",
            ")",
            "1 (x) S",
            "1 (x",
            "1 (x) S 1 2 3 4 5 6 7 8 9 10 11 -1",
        ] {
            assert_eq!(ProcessStats::parse(stat, "", 0), None, "{stat}");
        }
        assert_eq!(max_open_files("Max open files unlimited"), None);
        assert_eq!(boot_time("btime x"), None);
    }

    #[test]
    fn the_cpu_counter_is_named_as_each_format_names_it() {
        let stats = ProcessStats::parse(STAT, STATUS, 0).unwrap();
        let prometheus = stats.encode(Format::Prometheus);
        assert!(prometheus.contains("# TYPE process_cpu_seconds_total counter\n"));
        assert!(prometheus.contains("\nprocess_cpu_seconds_total 3.8\n"));
        let openmetrics = stats.encode(Format::OpenMetrics);
        assert!(openmetrics.contains("# TYPE process_cpu_seconds counter\n"));
        assert!(openmetrics.contains("\nprocess_cpu_seconds_total 3.8\n"));
        assert!(openmetrics.contains("# TYPE process_resident_memory_bytes gauge\n"));
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_is_read() {
        let stats = ProcessStats::read().unwrap();
        assert!(stats.resident_bytes > 0 && stats.virtual_bytes >= stats.resident_bytes);
        assert!(stats.open_fds.unwrap() > 0 && stats.max_fds.unwrap() > 0);
        assert!(stats.start_time_seconds > 1_500_000_000.0);
    }
}
