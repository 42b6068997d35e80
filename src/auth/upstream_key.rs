//! The real Anthropic API key, read from a file when the configuration loads. The master reads
//! it as root, so the file can be 0600 root and never readable by workers or users.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum UpstreamKeyError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is empty: it must hold the upstream API key on its first line")]
    Empty { path: String },
    #[error(
        "{path}: the key must be one line of printable ASCII (no spaces or control characters)"
    )]
    NotPrintable { path: String },
}

pub struct Loaded {
    pub key: Vec<u8>,
    /// Set when the file's permissions expose the key.
    pub warning: Option<String>,
}

pub fn load(path: &Path) -> Result<Loaded, UpstreamKeyError> {
    let p = path.display().to_string();
    let read_err = |source| UpstreamKeyError::Read {
        path: p.clone(),
        source,
    };
    let text = std::fs::read(path).map_err(read_err)?;
    let mode = std::fs::metadata(path)
        .map_err(read_err)?
        .permissions()
        .mode();
    let key = parse(&text).map_err(|e| match e {
        ParseError::Empty => UpstreamKeyError::Empty { path: p.clone() },
        ParseError::NotPrintable => UpstreamKeyError::NotPrintable { path: p.clone() },
    })?;
    let warning = (mode & 0o004 != 0).then(|| {
        format!(
            "{p} is readable by every user (mode {:o}): chmod 600 it",
            mode & 0o777
        )
    });
    Ok(Loaded { key, warning })
}

#[derive(Debug, PartialEq, Eq)]
enum ParseError {
    Empty,
    NotPrintable,
}

/// The first line, without surrounding whitespace; a header value must be printable ASCII.
fn parse(text: &[u8]) -> Result<Vec<u8>, ParseError> {
    let first = text
        .split(|&c| c == b'\n')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    if first.is_empty() {
        return Err(ParseError::Empty);
    }
    if !first.iter().all(|&c| c.is_ascii_graphic()) {
        return Err(ParseError::NotPrintable);
    }
    Ok(first.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_line_trimmed() {
        assert_eq!(parse(b"  sk-ant-api03-abc\n").unwrap(), b"sk-ant-api03-abc");
        assert_eq!(
            parse(b"sk-ant-api03-abc\r\nextra").unwrap(),
            b"sk-ant-api03-abc"
        );
        assert_eq!(parse(b"\n").unwrap_err(), ParseError::Empty);
        assert_eq!(parse(b"sk ant").unwrap_err(), ParseError::NotPrintable);
        assert_eq!(parse(b"sk\x01").unwrap_err(), ParseError::NotPrintable);
    }

    #[test]
    fn warns_when_world_readable() {
        let dir = std::env::temp_dir().join(format!("rg-upkey-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("key");
        std::fs::write(&f, "sk-ant-api03-test\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(load(&f).unwrap().warning.unwrap().contains("chmod 600"));
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(load(&f).unwrap().warning.is_none());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
