//! Every photo and video format photosync lists is backed up: a file of
//! each, its first bytes laid out as the format's published description
//! says, the rest noise. The layouts are cited where each is made.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::harness::{Env, noise, stderr, stdout, tree, write};

/// `head` followed by noise, `len` bytes in all.
fn file(head: &[u8], len: usize, seed: u64) -> Vec<u8> {
    let mut content = head.to_vec();
    content.extend(noise(len.saturating_sub(head.len()), seed));
    content
}

/// A JPEG (ITU T.81 B.1.1.2: SOI, then an APP0 "JFIF" marker).
fn jpeg(len: usize, seed: u64) -> Vec<u8> {
    file(b"\xFF\xD8\xFF\xE0\0\x10JFIF\0", len, seed)
}

/// An environment whose source leaves out `scratch/` by an `exclude` rule.
fn env_excluding_scratch() -> Env {
    let env = Env::new();
    let config = std::fs::read_to_string(&env.config).expect("config");
    let source_line = format!("path = {}\n", crate::harness::quote(&env.source));
    assert!(config.contains(&source_line));
    std::fs::write(&env.config, config.replace(&source_line, &format!("{source_line}exclude = [\"scratch/**\"]\n")))
        .expect("config");
    env
}

/// An ISO base media file (ISO/IEC 14496-12 §4.3: a `ftyp` box first) of
/// `brand`.
fn iso_bmff(brand: [u8; 4], seed: u64) -> Vec<u8> {
    let mut head = b"\0\0\0\x18ftyp".to_vec();
    head.extend(brand);
    head.extend(b"\0\0\0\0mif1");
    head.extend(brand);
    file(&head, 6_000, seed)
}

/// A TIFF-based raw (TIFF 6.0 §2: byte order, 42, first IFD offset).
fn tiff(seed: u64) -> Vec<u8> {
    file(b"II*\0\x08\0\0\0\x10\0", 6_000, seed)
}

/// An MPEG transport stream of `packet`-byte packets (ISO/IEC 13818-1
/// §2.4.3.2: every packet opens with the sync byte 0x47; Blu-ray's M2TS
/// puts a 4-byte timestamp before each).
fn transport_stream(packet: usize, seed: u64) -> Vec<u8> {
    let mut content = noise(packet * 8, seed);
    for at in (0..content.len()).step_by(packet) {
        content[at + packet - 188] = 0x47;
    }
    content
}

/// A file of every listed format, by name.
fn every_format() -> BTreeMap<PathBuf, Vec<u8>> {
    let mut kyocera = noise(25, 40);
    kyocera.extend(b"ARECOYK");
    let samples: Vec<(&str, Vec<u8>)> = vec![
        // JPEG (ITU T.81 B.1.1.2: SOI, then a marker) and the files that are JPEGs inside.
        ("photo.jpg", jpeg(6_000, 1)),
        ("stereo.jps", file(b"\xFF\xD8\xFF\xE1\0\x10Exif\0\0", 6_000, 2)),
        ("multi.mpo", file(b"\xFF\xD8\xFF\xE1\0\x10Exif\0\0", 6_000, 3)),
        ("round.insp", file(b"\xFF\xD8\xFF\xE1\0\x10Exif\0\0", 6_000, 4)),
        ("phone.heic", iso_bmff(*b"heic", 5)),
        ("burst.heif", iso_bmff(*b"mif1", 6)),
        ("new.avif", iso_bmff(*b"avif", 7)),
        ("shot.png", file(b"\x89PNG\r\n\x1A\n\0\0\0\rIHDR", 6_000, 8)),
        ("anim.gif", file(b"GIF89a", 6_000, 9)),
        // RIFF (Microsoft RIFF: "RIFF", size, form type).
        ("pic.webp", file(b"RIFF\0\x10\0\0WEBPVP8 ", 6_000, 10)),
        ("scan.tif", tiff(11)),
        // JPEG XL (ISO/IEC 18181-1 §9.1 codestream 0xFF0A; 18181-2 container box).
        ("bare.jxl", file(b"\xFF\x0A\xFA\x7F", 6_000, 12)),
        ("boxed.jxl", file(b"\0\0\0\x0CJXL \r\n\x87\n\0\0\0\x14ftypjxl ", 6_000, 13)),
        // BMP (BITMAPFILEHEADER: "BM", size, two reserved zeros, offset; then a 40-byte BITMAPINFOHEADER).
        ("old.bmp", file(b"BM\x70\x17\0\0\0\0\0\0\x36\0\0\0\x28\0\0\0", 6_000, 14)),
        // Raws built on TIFF: DNG, Nikon, Sony, Pentax, Samsung, Hasselblad, Epson, Kodak, Leaf, Leica, Phase One.
        ("raw.dng", tiff(15)),
        ("raw.nef", tiff(16)),
        ("raw.nrw", tiff(17)),
        ("raw.arw", tiff(18)),
        ("raw.srf", tiff(19)),
        ("raw.sr2", tiff(20)),
        ("raw.pef", tiff(21)),
        ("raw.srw", tiff(22)),
        ("raw.3fr", tiff(23)),
        ("raw.erf", tiff(24)),
        ("raw.kdc", tiff(25)),
        ("raw.dcr", tiff(26)),
        ("raw.mos", tiff(27)),
        ("raw.rwl", tiff(28)),
        ("raw.iiq", tiff(29)),
        ("raw.cr2", file(b"II*\0\x10\0\0\0CR\x02\0", 6_000, 30)),
        ("raw.cr3", iso_bmff(*b"crx ", 31)),
        // Canon CRW (CIFF: byte order, header length 26, "HEAPCCDR").
        ("raw.crw", file(b"II\x1A\0\0\0HEAPCCDR", 6_000, 32)),
        // Olympus ORF ("IIRO"), Panasonic RW2 ("IIU\0"), Fujifilm RAF, Sigma X3F ("FOVb").
        ("raw.orf", file(b"IIRO\x08\0\0\0", 6_000, 33)),
        ("raw.rw2", file(b"IIU\0\x18\0\0\0", 6_000, 34)),
        ("raw.raf", file(b"FUJIFILMCCD-RAW 0201FF383501", 6_000, 35)),
        ("raw.x3f", file(b"FOVb\0\0\x02\0", 6_000, 36)),
        // Minolta MRW: a "\0MRM" block holding the others.
        ("raw.mrw", file(b"\0MRM\0\0\x0B\x48\0PRD\0\0\0\x18", 6_000, 37)),
        // Kyocera (Contax N Digital) RAW: "ARECOYK" at byte 25.
        ("raw.raw", file(&kyocera, 6_000, 38)),
        // Videos.
        ("clip.mp4", iso_bmff(*b"isom", 41)),
        ("clip.m4v", iso_bmff(*b"M4V ", 42)),
        ("clip.mov", iso_bmff(*b"qt  ", 43)),
        ("clip.3gp", iso_bmff(*b"3gp5", 44)),
        ("clip.insv", iso_bmff(*b"isom", 45)),
        ("clip.lrv", iso_bmff(*b"isom", 46)),
        // EBML (RFC 8794 §8: the EBML element ID 0x1A45DFA3).
        ("clip.mkv", file(b"\x1A\x45\xDF\xA3\x9F\x42\x86\x81\x01", 6_000, 47)),
        ("clip.webm", file(b"\x1A\x45\xDF\xA3\x9F\x42\x86\x81\x01", 6_000, 48)),
        ("clip.avi", file(b"RIFF\0\x10\0\0AVI LIST", 6_000, 49)),
        ("cam.mts", transport_stream(192, 50)),
        ("tv.ts", transport_stream(188, 51)),
        // MPEG program stream (ISO/IEC 13818-1 §2.5.3.3: pack start code 0x000001BA).
        ("old.mpg", file(b"\0\0\x01\xBA\x44\0\x04\0\x04\x01", 6_000, 52)),
        // ASF (the ASF specification §3.1: the Header Object's GUID).
        ("clip.wmv", file(b"\x30\x26\xB2\x75\x8E\x66\xCF\x11\xA6\xD9\x00\xAA\x00\x62\xCE\x6C", 6_000, 53)),
        // DV (IEC 61834 / SMPTE 314M: a DIF header block, section type 0, sequence 0x1F07, "3F").
        ("tape.dv", file(b"\x1F\x07\x00\x3F", 6_000, 54)),
    ];
    samples.into_iter().map(|(name, content)| (PathBuf::from(name), content)).collect()
}

fn backup(env: &Env) -> serde_json::Value {
    let out = env.run(["backup", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    serde_json::from_slice(&out.stdout).expect("summary")
}

#[test]
fn a_minolta_mrw_and_a_kyocera_raw_are_backed_up_not_skipped_as_not_media() {
    let env = Env::new();
    let all = every_format();
    let raws: BTreeMap<_, _> =
        all.into_iter().filter(|(name, _)| ["raw.mrw", "raw.raw"].contains(&name.to_str().unwrap_or(""))).collect();
    for (name, content) in &raws {
        write(&env.source.join(name), content);
    }
    backup(&env);
    assert_eq!(tree(&env.dest), raws);
}

#[test]
fn every_listed_format_is_backed_up_byte_for_byte_and_a_text_file_named_jpg_is_not() {
    let env = Env::new();
    let all = every_format();
    for (name, content) in &all {
        write(&env.source.join(name), content);
    }
    write(&env.source.join("notes.jpg"), b"not a photo at all\n");
    let summary = backup(&env);
    let stored = tree(&env.dest);
    let missing: Vec<&Path> = all.keys().filter(|name| !stored.contains_key(*name)).map(PathBuf::as_path).collect();
    assert!(missing.is_empty(), "not backed up: {missing:?}\n{summary}");
    assert_eq!(stored, all);
}

#[test]
fn files_left_out_are_counted_by_reason_in_the_backup_summary() {
    let env = env_excluding_scratch();
    let photo = jpeg(6_000, 1);
    write(&env.source.join("a.jpg"), &photo);
    write(&env.source.join("notes.txt"), b"shopping list\n");
    write(&env.source.join("fake.jpg"), b"not a photo at all\n");
    write(&env.source.join(".secret.jpg"), &photo);
    write(&env.source.join(".thumbnails/1.jpg"), &photo);
    write(&env.source.join(".thumbnails/2.jpg"), &photo);
    write(&env.source.join("b.jpg.part"), &photo);
    write(&env.source.join("Thumbs.db"), b"litter");
    write(&env.source.join("scratch/c.jpg"), &photo);

    let summary = backup(&env);
    let skipped = &summary["skipped"];
    let counts: Vec<u64> =
        ["not_media", "hidden", "partial_download", "os_metadata", "excluded", "unreadable", "unsettled"]
            .iter()
            .map(|reason| skipped[reason].as_u64().unwrap_or_else(|| panic!("{reason} in {summary}")))
            .collect();
    // A hidden folder counts once: what is inside it is not looked at.
    assert_eq!(counts, [2, 2, 1, 1, 1, 0, 0], "{summary}");
    assert_eq!(tree(&env.dest), BTreeMap::from([(PathBuf::from("a.jpg"), photo)]));

    let out = env.run(["backup"]);
    let text = stdout(&out);
    assert!(
        text.contains("Not backed up: 2 not a photo or video, 2 hidden, 1 partial download or temporary file, 1 system file, 1 excluded by your rules."),
        "{text}"
    );
}

#[test]
fn content_decides_whatever_the_extension_and_an_unchanged_tree_is_not_read_again() {
    let env = Env::new();
    let media = BTreeMap::from([
        (PathBuf::from("IMG_1234"), iso_bmff(*b"heic", 61)),
        (PathBuf::from("VID_0001"), iso_bmff(*b"3gp5", 62)),
        (PathBuf::from("recovered/file0042.bin"), file(b"\xFF\xD8\xFF\xE1\0\x10Exif\0\0", 6_000, 63)),
        (PathBuf::from("tape.dif"), file(b"\x1F\x07\x00\x3F", 6_000, 64)),
        (PathBuf::from("a.jpg"), jpeg(6_000, 65)),
    ]);
    for (name, content) in &media {
        write(&env.source.join(name), content);
    }
    for i in 0..40 {
        write(&env.source.join(format!("notes/{i}.txt")), format!("note {i}\n").as_bytes());
    }
    write(&env.source.join("fake.jpg"), b"not a photo at all\n");

    let out = env.run(["backup", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let first: serde_json::Value = serde_json::from_slice(&out.stdout).expect("summary");
    assert_eq!(tree(&env.dest), media, "{first}");
    assert_eq!(first["skipped"]["not_media"], 41, "{first}");
    assert_eq!(first["files_read"], 46, "{first}");
    let warned = stderr(&out);
    assert!(warned.contains("fake.jpg") && warned.contains("content is not one"), "{warned}");
    assert!(!warned.contains("0.txt"), "a file that does not say it is a photo is not a warning: {warned}");

    let out = env.run(["backup", "--json"]);
    let again: serde_json::Value = serde_json::from_slice(&out.stdout).expect("summary");
    assert_eq!(again["files_read"], 0, "nothing unchanged is read again: {again}");
    assert_eq!(again["skipped"]["not_media"], 41, "{again}");
    assert!(!stderr(&out).contains("fake.jpg"), "the warning is given once: {}", stderr(&out));

    // A file that becomes a photo is read again and backed up.
    let now_a_photo = jpeg(7_000, 66);
    write(&env.source.join("notes/0.txt"), &now_a_photo);
    let again: serde_json::Value = serde_json::from_slice(&env.run(["backup", "--json"]).stdout).expect("summary");
    assert_eq!((again["files_read"].as_u64(), again["uploaded"].as_u64()), (Some(1), Some(1)), "{again}");
    assert_eq!(tree(&env.dest)[Path::new("notes/0.txt")], now_a_photo);
}

#[test]
fn why_answers_for_a_file_of_each_kind() {
    let env = env_excluding_scratch();
    let photo = jpeg(6_000, 1);
    for name in ["a.jpg", ".secret.jpg", "b.jpg.part", "scratch/c.jpg"] {
        write(&env.source.join(name), &photo);
    }
    write(&env.source.join("notes.txt"), b"shopping list\n");
    write(&env.source.join("Thumbs.db"), b"litter");
    backup(&env);
    write(&env.source.join("new.jpg"), &jpeg(6_000, 2));
    write(&env.dir.path().join("elsewhere.jpg"), &photo);

    let expected = [
        ("a.jpg", "backed_up", "acknowledged"),
        ("notes.txt", "not_backed_up", "not_media"),
        (".secret.jpg", "not_backed_up", "hidden"),
        ("b.jpg.part", "not_backed_up", "partial_download"),
        ("Thumbs.db", "not_backed_up", "os_metadata"),
        ("scratch/c.jpg", "not_backed_up", "excluded"),
        ("new.jpg", "waiting", "not_scanned"),
        ("gone.jpg", "not_backed_up", "missing"),
        ("../elsewhere.jpg", "not_backed_up", "outside_sources"),
    ];
    let paths: Vec<String> = expected.iter().map(|(name, _, _)| env.source.join(name).display().to_string()).collect();
    let mut args = vec!["why", "--json"];
    args.extend(paths.iter().map(String::as_str));
    let out = env.run(args);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let answers: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    for (i, (name, verdict, reason)) in expected.iter().enumerate() {
        let answer = &answers[i];
        assert_eq!(
            (answer["verdict"].as_str(), answer["reason"].as_str()),
            (Some(*verdict), Some(*reason)),
            "{name}: {answer}"
        );
    }
    assert_eq!(answers[0]["destinations"][0]["receipt_key"], "a.jpg", "{}", answers[0]);
    assert_eq!(answers[0]["destinations"][0]["state"], "acknowledged", "{}", answers[0]);

    let out = env.run(["why", &paths[0], &paths[1]]);
    let text = stdout(&out);
    assert!(text.contains("a.jpg: backed up — every destination holds it"), "{text}");
    assert!(text.contains("notes.txt: not backed up — its content is not a photo or video"), "{text}");
}

#[test]
fn status_says_what_the_last_scan_left_out() {
    let env = Env::new();
    env.write_config("settle = \"300ms\"\n");
    write(&env.source.join("a.jpg"), &jpeg(6_000, 1));
    write(&env.source.join("notes.txt"), b"shopping list\n");
    write(&env.source.join("b.jpg.crdownload"), b"half a photo");
    let daemon = env.start_daemon();
    daemon.wait_until(std::time::Duration::from_secs(30), "the photo is backed up", || {
        env.count_jobs("acknowledged") == 1
    });
    // The files have settled: a full scan now reads them.
    let scan = env.run(["scan"]);
    assert!(scan.status.success(), "{}", stderr(&scan));
    let skipped = &env.status()["skipped"];
    assert_eq!((skipped["not_media"].as_u64(), skipped["partial_download"].as_u64()), (Some(1), Some(1)), "{skipped}");
    let text = stdout(&env.run(["status"]));
    assert!(
        text.contains("not backed up at the last scan: 1 not a photo or video, 1 partial download or temporary file"),
        "{text}"
    );
    // `why` asks the running daemon.
    let photo = env.source.join("a.jpg").display().to_string();
    let notes = env.source.join("notes.txt").display().to_string();
    let out = env.run(["why", "--json", &photo, &notes]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let answers: serde_json::Value = serde_json::from_slice(&out.stdout).expect("json");
    assert_eq!((answers[0]["verdict"].as_str(), answers[1]["reason"].as_str()), (Some("backed_up"), Some("not_media")));
}
