//! The sample tree the quickstart replicates when no `--source` is given: a little of
//! every kind of entry, with deterministic content.

use std::path::Path;

pub fn create_sample_tree(root: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(root.join("docs/guides"))?;
    std::fs::create_dir_all(root.join("data/blobs"))?;
    std::fs::create_dir_all(root.join("empty-dir"))?;
    for i in 0..200u32 {
        let text = format!("sample file {i}\n").repeat(20 + (i as usize % 50));
        std::fs::write(root.join(format!("docs/guides/note-{i:03}.txt")), text)?;
    }
    // Two 4 MiB files of pseudo-random (incompressible) bytes that share their first half.
    let mut blob = Vec::with_capacity(4 << 20);
    let mut counter = 0u64;
    while blob.len() < 4 << 20 {
        blob.extend_from_slice(blake3::hash(&counter.to_le_bytes()).as_bytes());
        counter += 1;
    }
    std::fs::write(root.join("data/blobs/a.bin"), &blob)?;
    for b in &mut blob[2 << 20..] {
        *b = b.wrapping_add(1);
    }
    std::fs::write(root.join("data/blobs/b.bin"), &blob)?;
    // A sparse file: 8 MiB with 4 KiB of data in the middle.
    let sparse = std::fs::File::create(root.join("data/sparse.img"))?;
    sparse.set_len(8 << 20)?;
    std::os::unix::fs::FileExt::write_at(&sparse, &[0xAB; 4096], 4 << 20)?;
    let _ = std::os::unix::fs::symlink("guides/note-000.txt", root.join("docs/latest"));
    let _ = std::fs::hard_link(root.join("docs/guides/note-001.txt"), root.join("docs/first-link.txt"));
    Ok(())
}
