//! Memory the process gives back. glibc's allocator keeps what it freed in
//! its arenas for the next allocation: after a flat-out ingest, librdkafka's
//! fetched messages (up to a queue's worth per consumer, one allocation
//! each) are freed but stay resident, some 270 MB for the four shipped
//! models while the live heap is under 10 MB. A thread returns free pages
//! to the system every `service.memory_trim_interval_ms` (`malloc_trim`;
//! it walks every arena, a few milliseconds, off the models' threads).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Resident set size of this process in bytes (Linux), if known.
pub fn resident_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Returns the allocator's free memory to the system; true if any was.
// the one foreign call of the crate: glibc has no safe binding for it
#[allow(unsafe_code)]
pub fn trim() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        // SAFETY: malloc_trim only walks the allocator's own lists
        unsafe { libc::malloc_trim(0) == 1 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Trims every `interval` until `cancel` trips, on a thread of its own.
/// `Duration::ZERO`: never.
pub fn spawn_trimmer(interval: Duration, cancel: CancellationToken) {
    if interval.is_zero() {
        return;
    }
    let started = std::thread::Builder::new()
        .name("memory-trim".into())
        .spawn(move || {
            while !cancel.is_cancelled() {
                std::thread::sleep(interval);
                trim();
            }
        });
    if let Err(e) = started {
        tracing::warn!(error = %e, "cannot start the memory trimming thread; freed memory stays with the allocator");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freed_memory_goes_back_to_the_system() {
        // many small blocks, as librdkafka's fetched messages are: freed,
        // they stay resident until trimmed
        let before = resident_bytes().expect("Linux reports RSS");
        let blocks: Vec<Vec<u8>> = (0..200_000).map(|i| vec![i as u8; 1000]).collect();
        let full = resident_bytes().expect("RSS");
        assert!(full > before + 150_000_000, "{before} -> {full}");
        // keep every 100th: the heap's top stays in use, so only a trim
        // inside the heap gives the rest back
        let kept: Vec<Vec<u8>> = blocks.into_iter().step_by(100).collect();
        let freed = resident_bytes().expect("RSS");
        trim();
        let trimmed = resident_bytes().expect("RSS");
        assert!(
            trimmed + 100_000_000 < freed,
            "freed {freed}, trimmed {trimmed}"
        );
        assert_eq!(kept.len(), 2_000);
    }
}
