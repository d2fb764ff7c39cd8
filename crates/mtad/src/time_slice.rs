//! The scheduler time slice mtad's threads ask for (`time_slice` in the
//! configuration; none by default).
//!
//! Linux's scheduler (EEVDF, 6.6 and later) picks among runnable threads
//! by a deadline one slice past when each became eligible, and a woken
//! thread with a shorter slice than the one running may take the CPU from
//! it. Much of mtad's work is short bursts between waits (a spool write
//! ends, the session answers), which short slices put on a CPU sooner
//! when the machine is busy; its long bursts (100 KiB messages) are cut
//! up more, which costs throughput: docs/configuration.md has the
//! figures. The share of CPU time is the same. Kernels without custom
//! slices take the request and ignore it.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Asks for slices of `slice` for the calling thread (0: no request).
/// Says why once in the log if the kernel refused; the thread runs on
/// either way.
pub(crate) fn request_for_this_thread(slice: Duration) {
    static WARNED: AtomicBool = AtomicBool::new(false);
    if slice.is_zero() {
        return;
    }
    if let Err(e) = set(slice) {
        if !WARNED.swap(true, Ordering::Relaxed) {
            tracing::warn!(error = %e, ?slice, "the kernel refused time_slice; its default slice applies");
        }
    }
}

#[cfg(target_os = "linux")]
fn set(slice: Duration) -> io::Result<()> {
    use nix::libc;

    // struct sched_attr, as of Linux 4.13 (SCHED_ATTR_SIZE_VER1).
    #[repr(C)]
    #[derive(Default)]
    struct SchedAttr {
        size: u32,
        policy: u32,
        flags: u64,
        nice: i32,
        priority: u32,
        runtime: u64,
        deadline: u64,
        period: u64,
        util_min: u32,
        util_max: u32,
    }

    // sched_setattr sets the nice value too: keep the thread's. (-1 is
    // also a valid nice value, so errors are told apart by errno.)
    nix::errno::Errno::clear();
    // SAFETY: getpriority takes plain integers and touches no memory.
    let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
    if nice == -1 && nix::errno::Errno::last_raw() != 0 {
        return Err(io::Error::last_os_error());
    }
    let attr = SchedAttr {
        size: std::mem::size_of::<SchedAttr>() as u32,
        policy: libc::SCHED_OTHER as u32,
        nice,
        runtime: u64::try_from(slice.as_nanos()).unwrap_or(u64::MAX),
        ..SchedAttr::default()
    };
    // SAFETY: `attr` is a live, initialised sched_attr whose size field is
    // its size; pid 0 is the calling thread; the kernel only reads it.
    let rc = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr as *const SchedAttr, 0) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(not(target_os = "linux"))]
fn set(_slice: Duration) -> io::Result<()> {
    Ok(())
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    /// The slice the kernel reports for the calling thread, where it
    /// reports one (`se.slice` in /proc, Linux 6.6 and later).
    fn reported_slice() -> Option<u64> {
        let text = std::fs::read_to_string("/proc/thread-self/sched").ok()?;
        let line = text.lines().find(|l| l.starts_with("se.slice"))?;
        line.split(':').nth(1)?.trim().parse().ok()
    }

    #[test]
    fn the_thread_gets_the_slice_it_asked_for() {
        std::thread::spawn(|| {
            let Some(before) = reported_slice() else {
                eprintln!("this kernel reports no slice: nothing to check");
                return;
            };
            let wanted = if before == 300_000 { 400_000 } else { 300_000 };
            set(Duration::from_nanos(wanted)).unwrap();
            assert_eq!(reported_slice(), Some(wanted));
        })
        .join()
        .unwrap();
    }
}
