//! What `nginx -t` can tell about a state file path before the master ever writes it: a
//! directory there can never be replaced by the file, and a missing directory means no save
//! will succeed until someone creates it. Both are warnings (the directory may be made before
//! nginx starts, e.g. by a tmpfiles rule; a bad state file never stops nginx either).

use std::path::Path;

#[derive(Debug, PartialEq, Eq)]
pub enum StatePathProblem {
    /// The path names a directory: the path.
    Directory(String),
    /// The directory the file goes in does not exist (or is not a directory): its path.
    NoDirectory(String),
}

impl std::fmt::Display for StatePathProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StatePathProblem::Directory(path) => write!(
                f,
                "{path} is a directory, so the state cannot be saved: give the path of a file in it, such as state.json"
            ),
            StatePathProblem::NoDirectory(dir) => write!(
                f,
                "the directory {dir} does not exist: the state cannot be saved until you create it"
            ),
        }
    }
}

pub fn check_state_path(path: &Path) -> Option<StatePathProblem> {
    if path.is_dir() {
        return Some(StatePathProblem::Directory(path.display().to_string()));
    }
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    (!dir.is_dir()).then(|| StatePathProblem::NoDirectory(dir.display().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_and_missing_parents_are_told_apart_from_good_paths() {
        let tmp = std::env::temp_dir().join(format!("rg-state-path-{}", std::process::id()));
        std::fs::create_dir_all(&tmp).unwrap();
        assert_eq!(
            check_state_path(&tmp),
            Some(StatePathProblem::Directory(tmp.display().to_string()))
        );
        assert_eq!(check_state_path(&tmp.join("state.json")), None);
        let gone = tmp.join("gone");
        assert_eq!(
            check_state_path(&gone.join("state.json")),
            Some(StatePathProblem::NoDirectory(gone.display().to_string()))
        );
        let file = tmp.join("file");
        std::fs::write(&file, b"x").unwrap();
        assert_eq!(
            check_state_path(&file),
            None,
            "an existing file is replaced"
        );
        assert!(matches!(
            check_state_path(&file.join("state.json")),
            Some(StatePathProblem::NoDirectory(_))
        ));
        assert!(StatePathProblem::Directory("/x".into())
            .to_string()
            .starts_with("/x is a directory"));
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
