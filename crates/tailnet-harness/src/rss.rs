//! Resident set size (Linux `VmRSS` in `/proc/<pid>/status`); `None`
//! elsewhere or when the process is gone.

/// `VmRSS` of process `pid`, in bytes.
pub fn of_pid(pid: u32) -> Option<u64> {
    parse_status(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
}

/// `VmRSS` of this process, in bytes.
pub fn of_self() -> Option<u64> {
    parse_status(&std::fs::read_to_string("/proc/self/status").ok()?)
}

/// The `VmRSS:` line of a `/proc/<pid>/status` text, in bytes.
fn parse_status(status: &str) -> Option<u64> {
    let kib: u64 = status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()?;
    Some(kib * 1024)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_vmrss_in_bytes() {
        let text = "Name:\tx\nVmPeak:\t  9000 kB\nVmRSS:\t    1234 kB\nThreads:\t1\n";
        assert_eq!(parse_status(text), Some(1234 * 1024));
        assert_eq!(parse_status("Name:\tkthreadd\n"), None);
    }

    #[test]
    fn this_process_has_a_resident_set() {
        if cfg!(target_os = "linux") {
            let me = of_self().expect("VmRSS of this process");
            assert!(me > 0);
            assert_eq!(of_pid(std::process::id()).map(|b| b > 0), Some(true));
        }
    }
}
