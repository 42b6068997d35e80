//! Reading a file the configuration names, without trusting what it is: a FIFO would block
//! `nginx -t` (and the master on reload) forever, `/dev/zero` would eat memory, a directory
//! gives a confusing error. Only a regular file of at most `max` bytes is read.

use std::io::{self, Read};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

fn invalid(msg: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, msg)
}

pub fn read_bounded(path: &Path, max: u64) -> io::Result<Vec<u8>> {
    // O_NONBLOCK: opening a FIFO returns at once instead of waiting for a writer; for a
    // regular file it changes nothing.
    let f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        return Err(invalid(
            "not a regular file (a directory, FIFO, socket or device)".to_owned(),
        ));
    }
    if meta.len() > max {
        return Err(invalid(format!("larger than {max} bytes")));
    }
    let mut out = Vec::with_capacity(meta.len() as usize);
    f.take(max + 1).read_to_end(&mut out)?;
    if out.len() as u64 > max {
        return Err(invalid(format!("larger than {max} bytes")));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_is_not_a_small_regular_file() {
        let dir = std::env::temp_dir().join(format!("rg-bounded-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("f");
        std::fs::write(&file, b"0123456789").unwrap();
        assert_eq!(read_bounded(&file, 10).unwrap(), b"0123456789");
        assert!(read_bounded(&file, 9)
            .unwrap_err()
            .to_string()
            .contains("larger than 9"));
        assert!(read_bounded(&dir, 10)
            .unwrap_err()
            .to_string()
            .contains("not a regular file"));
        assert!(read_bounded(Path::new("/dev/zero"), 10)
            .unwrap_err()
            .to_string()
            .contains("not a regular file"));
        let fifo = dir.join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        assert!(read_bounded(&fifo, 10)
            .unwrap_err()
            .to_string()
            .contains("not a regular file"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
