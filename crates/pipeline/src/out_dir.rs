//! Where a run writes: a fresh folder per run (with `latest` pointing to it), or a folder the
//! user names, refused when it already holds a run unless they ask to overwrite it; either way
//! checked writable before any training starts. Every file is written atomically.

use std::path::{Path, PathBuf};

use crate::{PipelineError, Result};

/// Writes `contents` to `path` atomically: into `<path>.partial`, then renamed over `path`, so an
/// interrupted run or a full disk never leaves a truncated file under the final name (the
/// partial file is removed when writing fails). A `path` that exists as something other than a
/// file (a device such as `/dev/null`, a pipe, a folder) is refused: the rename would replace it.
pub fn write_file(path: &Path, contents: impl AsRef<[u8]>) -> Result<()> {
    if let Ok(existing) = std::fs::metadata(path) {
        if !existing.is_file() {
            return Err(PipelineError::Config(format!(
                "{} exists and is not a regular file (a device, pipe or folder); outputs are written by \
                 replacing the file, so name a file path instead",
                path.display()
            )));
        }
    }
    let mut partial = path.as_os_str().to_owned();
    partial.push(".partial");
    let partial = PathBuf::from(partial);
    if let Err(e) = std::fs::write(&partial, contents) {
        let _ = std::fs::remove_file(&partial);
        return Err(PipelineError::io(&partial, e));
    }
    std::fs::rename(&partial, path).map_err(|e| PipelineError::io(path, e))
}

/// Creates `dir` and its parents, naming it on failure (a file or device already there by that
/// name included).
pub(crate) fn create_dir(dir: &Path) -> Result<()> {
    if std::fs::metadata(dir).is_ok_and(|m| !m.is_dir()) {
        return Err(PipelineError::Config(format!(
            "{} exists and is not a folder; name a folder (it is made if missing)",
            dir.display()
        )));
    }
    std::fs::create_dir_all(dir).map_err(|e| PipelineError::io(dir, e))
}

/// The files a run writes, by name: a non-empty folder holding any of them holds a run.
fn is_run_output(name: &str) -> bool {
    name == "report.json"
        || name == "report.md"
        || name == crate::METRICS_LOG
        || name.ends_with(".png")
        || name.ends_with(".svg")
        || name.ends_with("-global.safetensors")
}

/// The output folder the user asked for, or a fresh one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutDir {
    /// `parent/<UTC date-time>`, with `parent/latest` made to point at it.
    Fresh {
        /// Where run folders are made.
        parent: PathBuf,
    },
    /// This folder; when it holds a run already, its run files are replaced only if `overwrite`.
    Given {
        /// The folder.
        path: PathBuf,
        /// Replace the run files it holds.
        overwrite: bool,
    },
}

impl OutDir {
    /// Makes the folder, checks that it can be written, and returns it.
    pub fn prepare(&self) -> Result<PathBuf> {
        let dir = match self {
            OutDir::Fresh { parent } => fresh_dir(parent)?,
            OutDir::Given { path, overwrite } => {
                let old = run_files(path)?;
                if !old.is_empty() && !overwrite {
                    return Err(PipelineError::Config(format!(
                        "--out {} already holds a run ({}): choose another --out, omit --out for a fresh folder \
                         under runs/, or pass --overwrite to replace it",
                        path.display(),
                        old.iter()
                            .map(|p| p.file_name().unwrap_or_default().to_string_lossy())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )));
                }
                for file in old {
                    std::fs::remove_file(&file).map_err(|e| PipelineError::io(&file, e))?;
                }
                create_dir(path)?;
                path.clone()
            }
        };
        let probe = dir.join(".align-fl-write-check");
        std::fs::write(&probe, b"")
            .map_err(|e| PipelineError::io(&dir, e).within("the output folder is not writable"))?;
        std::fs::remove_file(&probe).map_err(|e| PipelineError::io(&probe, e))?;
        if let OutDir::Fresh { parent } = self {
            point_latest(parent, &dir);
        }
        Ok(dir)
    }
}

/// The run files in `dir` (none when it does not exist).
fn run_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Ok(Vec::new()) };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| PipelineError::io(dir, e))?;
        if entry.file_name().to_str().is_some_and(is_run_output) {
            files.push(entry.path());
        }
    }
    files.sort();
    Ok(files)
}

/// A new folder `parent/<YYYY-MM-DD_HH-MM-SS>` (UTC), suffixed `-2`, `-3`, … if taken.
fn fresh_dir(parent: &Path) -> Result<PathBuf> {
    create_dir(parent)?;
    let stamp = utc_stamp(std::time::SystemTime::now());
    for n in 1.. {
        let name = if n == 1 { stamp.clone() } else { format!("{stamp}-{n}") };
        let dir = parent.join(name);
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(PipelineError::io(&dir, e)),
        }
    }
    unreachable!("some suffix is free")
}

/// Points `parent/latest` at `dir` (a symbolic link; left alone where links cannot be made or
/// `latest` is a real folder of an older layout).
fn point_latest(parent: &Path, dir: &Path) {
    let latest = parent.join("latest");
    let is_link = std::fs::symlink_metadata(&latest).is_ok_and(|m| m.file_type().is_symlink());
    if is_link {
        let _ = std::fs::remove_file(&latest);
    }
    #[cfg(unix)]
    if !latest.exists() {
        let _ = std::os::unix::fs::symlink(dir.file_name().unwrap_or_default(), &latest);
    }
}

/// `YYYY-MM-DD_HH-MM-SS` in UTC (civil date from days since 1970: Hinnant's algorithm).
fn utc_stamp(time: std::time::SystemTime) -> String {
    let secs = time.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs()) as i64;
    let (days, rest) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}_{:02}-{:02}-{:02}", rest / 3600, rest % 3600 / 60, rest % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("align-fl-outdir-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn outputs_never_replace_a_device_pipe_or_folder() {
        let dir = temp("not-a-file");
        let pipe = dir.join("pipe");
        create_dir(&dir).unwrap();
        let made = std::process::Command::new("mkfifo").arg(&pipe).status().is_ok_and(|s| s.success());
        let refused = |path: &Path| {
            let e = write_file(path, b"x").unwrap_err().to_string();
            assert!(e.contains("is not a regular file") && e.contains(&*path.to_string_lossy()), "{e}");
        };
        refused(&dir);
        if made {
            let e = create_dir(&pipe).unwrap_err().to_string();
            assert!(e.contains("exists and is not a folder"), "{e}");
            refused(&pipe);
            assert!(!std::fs::metadata(&pipe).unwrap().is_file(), "the pipe is still a pipe");
        }
        write_file(&dir.join("file"), b"x").unwrap();
        write_file(&dir.join("file"), b"y").unwrap();
        assert_eq!(std::fs::read(dir.join("file")).unwrap(), b"y");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn utc_stamps_are_civil_dates() {
        let at = |secs| utc_stamp(std::time::UNIX_EPOCH + std::time::Duration::from_secs(secs));
        assert_eq!(at(0), "1970-01-01_00-00-00");
        assert_eq!(at(951_782_400), "2000-02-29_00-00-00");
        assert_eq!(at(1_796_169_600 + 3_723), "2026-12-02_01-02-03");
    }

    #[test]
    fn a_named_folder_holding_a_run_is_kept_unless_overwrite() {
        let dir = temp("given");
        let given = |overwrite| OutDir::Given { path: dir.clone(), overwrite };
        assert_eq!(given(false).prepare().unwrap(), dir);
        std::fs::write(dir.join("report.json"), "{}").unwrap();
        std::fs::write(dir.join("notes.txt"), "mine").unwrap();
        let e = given(false).prepare().unwrap_err().to_string();
        assert!(e.contains("already holds a run (report.json)") && e.contains("--overwrite"), "{e}");
        assert!(dir.join("report.json").is_file());
        given(true).prepare().unwrap();
        assert!(!dir.join("report.json").exists() && dir.join("notes.txt").is_file());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn fresh_folders_are_new_and_latest_points_at_the_newest() {
        let parent = temp("fresh");
        let first = OutDir::Fresh { parent: parent.clone() }.prepare().unwrap();
        let second = OutDir::Fresh { parent: parent.clone() }.prepare().unwrap();
        assert_ne!(first, second);
        assert_eq!(std::fs::canonicalize(parent.join("latest")).unwrap(), std::fs::canonicalize(&second).unwrap());
        std::fs::remove_dir_all(&parent).unwrap();
    }

    /// /dev/full answers every write with ENOSPC: a partial file linked to it is a full disk.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_full_disk_leaves_the_previous_file_whole() {
        let dir = temp("full");
        create_dir(&dir).unwrap();
        let report = dir.join("report.json");
        write_file(&report, "old report").unwrap();
        assert_eq!(std::fs::read_to_string(&report).unwrap(), "old report");
        std::os::unix::fs::symlink("/dev/full", dir.join("report.json.partial")).unwrap();
        let e = write_file(&report, vec![b'x'; 1 << 16]).unwrap_err().to_string();
        assert!(e.contains("report.json.partial") && e.contains("No space left"), "{e}");
        assert_eq!(std::fs::read_to_string(&report).unwrap(), "old report");
        assert!(std::fs::symlink_metadata(dir.join("report.json.partial")).is_err(), "the partial file is removed");
        write_file(&report, "new report").unwrap();
        assert_eq!(std::fs::read_to_string(&report).unwrap(), "new report");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_output_folder_that_cannot_be_made_is_found_before_training() {
        let file = temp("a-file");
        std::fs::write(&file, b"not a folder").unwrap();
        let e = OutDir::Given { path: file.join("run"), overwrite: false }.prepare().unwrap_err().to_string();
        assert!(e.contains(&file.join("run").display().to_string()), "{e}");
        std::fs::remove_file(&file).unwrap();
    }
}
