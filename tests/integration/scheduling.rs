//! `time_slice`: the slice mtad's threads ask of the kernel's scheduler.

use crate::util::*;

/// `se.slice` of every thread of `pid` named `name` (nanoseconds), where
/// the kernel reports slices (Linux 6.6 and later).
fn slices(pid: i32, name: &str) -> Option<Vec<u64>> {
    let mut found = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("list threads") {
        let task = task.expect("thread entry").path();
        let comm = std::fs::read_to_string(task.join("comm")).unwrap_or_default();
        if comm.trim_end() != name {
            continue;
        }
        let sched = std::fs::read_to_string(task.join("sched")).ok()?;
        let line = sched.lines().find(|l| l.starts_with("se.slice"))?;
        found.push(line.split(':').nth(1)?.trim().parse().ok()?);
    }
    Some(found)
}

#[test]
fn mtads_threads_run_with_the_configured_slice_and_zero_leaves_the_kernels() {
    let work = Workdir::new();
    work.write_config("time_slice = \"300us\"", "");
    let mtad = Mtad::start(&work);
    let Some(workers) = slices(mtad.pid(), "tokio-rt-worker") else {
        eprintln!("this kernel reports no slices: nothing to check");
        return;
    };
    assert!(!workers.is_empty(), "no worker thread found");
    assert!(workers.iter().all(|&s| s == 300_000), "{workers:?}");
    drop(mtad);

    let work = Workdir::new();
    work.write_config("time_slice = \"0s\"", "");
    let mtad = Mtad::start(&work);
    let workers = slices(mtad.pid(), "tokio-rt-worker").expect("slices");
    let main = slices(mtad.pid(), "mtad").expect("slices");
    assert!(!workers.is_empty() && !main.is_empty());
    // Nothing asked: the workers have the slice the main thread has.
    assert!(
        workers.iter().all(|s| *s == main[0]),
        "{workers:?} {main:?}"
    );
}
