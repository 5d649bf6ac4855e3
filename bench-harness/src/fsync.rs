//! The disk's raw fdatasync rates: what a durable append can cost at
//! least on this disk, measured in the same run and directory as the
//! figures compared with them.
//!
//! Two shapes, as a log writes both: appending to a growing file (every
//! fdatasync also commits the file's new size and blocks, a journal
//! commit on ext4) and overwriting blocks of a preallocated file (data
//! only, what a segment preallocated ahead of its writes pays).

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::time::{Duration, Instant};

/// How long each probe runs.
pub const PROBE_TIME: Duration = Duration::from_secs(2);

/// The bytes written before each fdatasync.
const BLOCK: [u8; 4096] = [7u8; 4096];

/// Blocks of the preallocated file the overwrite probe cycles through.
const PREALLOCATED_BLOCKS: u64 = 256;

/// fdatasync calls per second, each after a 4 KiB write at the end of a
/// new file in `dir`, for `time`.
pub fn growing_file_rate(dir: &Path, time: Duration) -> std::io::Result<f64> {
    let path = dir.join("fdatasync-probe");
    let mut file = File::create(&path)?;
    let rate = rate_of(time, || {
        file.write_all(&BLOCK)?;
        file.sync_data()
    })?;
    drop(file);
    std::fs::remove_file(&path)?;
    Ok(rate)
}

/// fdatasync calls per second, each after a 4 KiB overwrite of a file in
/// `dir` whose blocks were written and synced beforehand, for `time`.
pub fn overwrite_rate(dir: &Path, time: Duration) -> std::io::Result<f64> {
    let path = dir.join("fdatasync-overwrite-probe");
    let file = preallocated(&path)?;
    let mut block = 0;
    let rate = rate_of(time, || {
        file.write_all_at(&BLOCK, block * BLOCK.len() as u64)?;
        block = (block + 1) % PREALLOCATED_BLOCKS;
        file.sync_data()
    })?;
    drop(file);
    std::fs::remove_file(&path)?;
    Ok(rate)
}

/// The overwrite probe's rate when each write and fdatasync is handed to
/// a thread of its own and answered, one at a time, as a caller hands an
/// append to a log's writer thread: what one sequential caller of such a
/// log can reach at most. On a virtual machine each hand-over wakes an
/// idle CPU, which costs a visible part of a fast disk's sync.
pub fn handed_overwrite_rate(dir: &Path, time: Duration) -> std::io::Result<f64> {
    let path = dir.join("fdatasync-handed-probe");
    let file = preallocated(&path)?;
    let (to_writer, requests) = std::sync::mpsc::channel::<u64>();
    let (to_caller, answers) = std::sync::mpsc::channel::<std::io::Result<()>>();
    let writer = std::thread::spawn(move || {
        for block in requests {
            let done = file
                .write_all_at(&BLOCK, block * BLOCK.len() as u64)
                .and_then(|()| file.sync_data());
            if to_caller.send(done).is_err() {
                break;
            }
        }
    });
    let mut block = 0;
    let rate = rate_of(time, || {
        to_writer
            .send(block)
            .map_err(|_| std::io::Error::other("the probe's writer thread stopped"))?;
        block = (block + 1) % PREALLOCATED_BLOCKS;
        answers
            .recv()
            .map_err(|_| std::io::Error::other("the probe's writer thread stopped"))?
    });
    drop(to_writer);
    writer
        .join()
        .map_err(|_| std::io::Error::other("the probe's writer thread panicked"))?;
    std::fs::remove_file(&path)?;
    rate
}

/// A new file at `path` of [`PREALLOCATED_BLOCKS`] blocks, written and
/// synced. Written, not fallocated: overwriting an unwritten extent would
/// still commit metadata (the extent turning written) on every sync.
fn preallocated(path: &Path) -> std::io::Result<File> {
    let file = File::create(path)?;
    for block in 0..PREALLOCATED_BLOCKS {
        file.write_all_at(&BLOCK, block * BLOCK.len() as u64)?;
    }
    file.sync_all()?;
    Ok(file)
}

/// Calls of `step` per second, over `time`.
fn rate_of(time: Duration, mut step: impl FnMut() -> std::io::Result<()>) -> std::io::Result<f64> {
    let started = Instant::now();
    let mut n = 0u32;
    while started.elapsed() < time {
        step()?;
        n += 1;
    }
    Ok(f64::from(n) / started.elapsed().as_secs_f64())
}

/// Both fdatasync rates of one run, in calls per second.
#[derive(Debug, Clone, Copy)]
pub struct Baselines {
    /// 4 KiB appended to a growing file, then fdatasync.
    pub growing: f64,
    /// 4 KiB overwritten in a preallocated file, then fdatasync.
    pub overwrite: f64,
}

impl Baselines {
    /// Measures both rates in `dir` (on the disk the benchmark writes to),
    /// [`PROBE_TIME`] each.
    pub fn measure(dir: &Path) -> std::io::Result<Baselines> {
        Ok(Baselines {
            growing: growing_file_rate(dir, PROBE_TIME)?,
            overwrite: overwrite_rate(dir, PROBE_TIME)?,
        })
    }

    /// The two baseline lines that head a benchmark's output.
    pub fn print(&self) {
        println!(
            "\nBaseline: raw fdatasync rate (4 KiB write + fdatasync, same disk): {:.0}/s",
            self.growing
        );
        println!(
            "Baseline: raw fdatasync rate (4 KiB overwrite of a preallocated file + fdatasync, same disk): {:.0}/s\n",
            self.overwrite
        );
    }

    /// `rate` as multiples of each baseline (growing, overwrite), each as
    /// `1.2×` with `decimals` decimals.
    pub fn times(&self, rate: f64, decimals: usize) -> [String; 2] {
        [self.growing, self.overwrite]
            .map(|baseline| crate::ratio::times(crate::ratio::ratio(rate, baseline), decimals))
    }
}

/// Writes back everything dirty and waits a moment, so that the next
/// measurement does not pay for what the last one left behind (without
/// it, whichever runs later measures slower).
pub fn settle() {
    rustix::fs::sync();
    std::thread::sleep(Duration::from_secs(1));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_probes_measure_and_clean_up() {
        let dir = tempfile::tempdir().unwrap();
        let time = Duration::from_millis(50);
        assert!(growing_file_rate(dir.path(), time).unwrap() > 0.0);
        assert!(overwrite_rate(dir.path(), time).unwrap() > 0.0);
        assert!(handed_overwrite_rate(dir.path(), time).unwrap() > 0.0);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
