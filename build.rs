// The module is a shared object that nginx dlopen()s: its nginx symbols are resolved at load
// time against the running binary. Linux linkers accept undefined symbols in a cdylib by
// default; macOS needs to be told.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("macos") {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-undefined,dynamic_lookup");
    }
}
