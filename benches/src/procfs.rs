//! Process measurements from `/proc`: resident memory and per-thread CPU time.

use std::time::Duration;

/// The process's resident set size in bytes (`VmRSS` of `/proc/self/status`), if readable.
pub fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// CPU time (user + system) of this process's threads whose name starts with `prefix`, or of
/// the whole process when `prefix` is empty. Resolution: one clock tick (10 ms).
pub fn cpu_time(prefix: &str) -> Duration {
    let ticks: u64 = match std::fs::read_dir("/proc/self/task") {
        Ok(tasks) => tasks
            .filter_map(Result::ok)
            .filter_map(|task| std::fs::read_to_string(task.path().join("stat")).ok())
            .filter_map(|stat| thread_ticks(&stat, prefix))
            .sum(),
        Err(_) => 0,
    };
    // USER_HZ is 100 on every Linux this runs on.
    Duration::from_millis(ticks * 10)
}

/// `utime + stime` of one `/proc/<pid>/task/<tid>/stat` line if its name matches.
fn thread_ticks(stat: &str, prefix: &str) -> Option<u64> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let name = stat.get(open + 1..close)?;
    if !name.starts_with(prefix) {
        return None;
    }
    // Fields after the name start at field 3 (state); utime and stime are fields 14 and 15.
    let mut fields = stat.get(close + 2..)?.split_whitespace();
    let utime: u64 = fields.nth(11)?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_utime_and_stime_of_a_named_thread() {
        let stat = "42 (bench-server) S 1 2 3 4 5 6 7 8 9 10 300 50 0 0 20 0";
        assert_eq!(thread_ticks(stat, "bench-server"), Some(350));
        assert_eq!(thread_ticks(stat, "other"), None);
    }

    #[test]
    fn the_process_has_a_resident_size() {
        assert!(rss_bytes().is_some_and(|rss| rss > 0));
    }
}
