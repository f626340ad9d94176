//! Embeds every `.avsc` under this folder into the crate, so the registry is
//! built from `schemas/` itself: adding a schema version is adding a file.

use std::{
    env, fs,
    path::{Path, PathBuf},
};

fn main() {
    // Read at run time, not compile time: a build-script binary may be
    // reused by another checkout of the workspace at another path.
    let root =
        PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let root = root.as_path();
    let mut files = Vec::new();
    collect(root, root, &mut files);
    files.sort();
    assert!(
        !files.is_empty(),
        "no .avsc files found under {}",
        root.display()
    );
    let mut out =
        String::from("/// Every schema file under `schemas/`, as (relative path, JSON).\n");
    out.push_str("pub static SCHEMA_FILES: &[(&str, &str)] = &[\n");
    for rel in &files {
        // The JSON itself, not an include_str! of an absolute path: the
        // output stays right if another checkout reuses it.
        let json = fs::read_to_string(root.join(rel)).expect("read schema file");
        out.push_str(&format!("    ({rel:?}, {json:?}),\n"));
    }
    out.push_str("];\n");
    let dest = Path::new(&env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("schema_files.rs");
    fs::write(dest, out).expect("write schema_files.rs");
    // Relative to the package root, so that another checkout at another
    // path checks its own files.
    println!("cargo:rerun-if-changed=.");
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<String>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        if path.is_dir() && name != "src" && name != "target" && name != "tests" {
            let rel = path.strip_prefix(root).unwrap_or(&path);
            println!("cargo:rerun-if-changed={}", rel.display());
            collect(root, &path, out);
        } else if path.extension().is_some_and(|e| e == "avsc") {
            let rel = path.strip_prefix(root).expect("under root");
            out.push(rel.to_string_lossy().replace('\\', "/"));
        }
    }
}
