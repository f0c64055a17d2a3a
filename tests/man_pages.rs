//! Every man page under `man/` passes `mandoc -Tlint -W warning` (mandoc is installed by
//! .ci/run). Style notes that depend on the machine (cross references to pages not in its
//! man database) are not failures; the pages are kept style-clean by hand.

#[test]
fn man_pages_are_lint_clean() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("man");
    let mut pages: Vec<_> = std::fs::read_dir(&dir)
        .expect("man/")
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.extension()
                .and_then(|e| e.to_str())
                .is_some_and(|e| e.chars().all(|c| c.is_ascii_digit()))
        })
        .collect();
    pages.sort();
    assert!(pages.len() >= 4, "{pages:?}");
    let out = std::process::Command::new("mandoc")
        .args(["-Tlint", "-W", "warning"])
        .args(&pages)
        .output()
        .expect("mandoc is required (apt-get install mandoc)");
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
