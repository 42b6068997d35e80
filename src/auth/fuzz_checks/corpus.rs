//! Replays the checked-in fuzz corpus (src/fuzz/corpus/<target>/) through the same checks the
//! fuzz targets run, so every finding pinned there stays fixed under plain `cargo test`.

use std::path::Path;

#[test]
fn fuzz_corpus_passes_every_check() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/fuzz/corpus");
    for (name, check) in super::TARGETS {
        let dir = root.join(name);
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("readable corpus dir").path();
            let data = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let r = std::panic::catch_unwind(|| check(&data));
            assert!(r.is_ok(), "{name}: {} breaks a promise", path.display());
            n += 1;
        }
        assert!(n > 0, "{}: empty corpus", dir.display());
    }
}
