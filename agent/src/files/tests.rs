use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};

use super::testing::TestCa;
use super::*;

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn versions(dir: &Path) -> Vec<String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .filter(|n| is_version_name(n))
        .map(|n| n.to_string_lossy().into_owned())
        .collect()
}

fn same(a: &Identity, b: &Identity) -> bool {
    a.chain == b.chain && a.bundle == b.bundle && a.key.pkcs8_der() == b.key.pkcs8_der()
}

/// Writes the cert and bundle of `id` and the key of `key_of` as plain files, as an older
/// agent or another tool would have.
fn write_plain(dir: &Path, id: &Identity, key_of: &Identity) {
    fs::write(dir.join(CERT_FILE), id.chain_pem()).unwrap();
    fs::write(dir.join(KEY_FILE), key_of.key.to_pem().as_bytes()).unwrap();
    fs::write(dir.join(BUNDLE_FILE), id.bundle_pem()).unwrap();
}

/// Every identity file is a link into the current version.
fn assert_links(dir: &Path) {
    for name in FILES {
        let meta = fs::symlink_metadata(dir.join(name)).unwrap();
        assert!(meta.file_type().is_symlink(), "{name} is not a link");
    }
}

#[test]
fn round_trip_and_layout() {
    let ca = TestCa::new();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("out");
    assert!(read_identity(&dir).unwrap().is_none());

    let id = ca.issue("web");
    write_identity(&dir, &id).unwrap();
    let back = read_identity(&dir).unwrap().unwrap();
    assert!(same(&id, &back));
    assert_eq!(
        back.spiffe_id().unwrap().as_str(),
        "spiffe://example.org/web"
    );
    assert_eq!(back.chain.len(), 2, "leaf and intermediate");

    assert_eq!(mode(&dir), 0o700, "a created out dir is private");
    assert_eq!(mode(&dir.join(KEY_FILE)), 0o600);
    for name in FILES {
        let link = fs::read_link(dir.join(name)).unwrap();
        assert_eq!(link, Path::new(DATA_LINK).join(name));
    }
    let data = fs::read_link(dir.join(DATA_LINK)).unwrap();
    assert!(is_version_name(data.as_os_str()));
    // Plain PEM readers (Envoy, nginx) see ordinary PEM through the links.
    let pem = fs::read_to_string(dir.join(CERT_FILE)).unwrap();
    assert_eq!(pem, id.chain_pem());
}

#[test]
fn key_is_0600_even_in_an_open_directory() {
    let ca = TestCa::new();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("out");
    fs::create_dir(&dir).unwrap();
    fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
    write_identity(&dir, &ca.issue("a")).unwrap();
    write_identity(&dir, &ca.issue("a")).unwrap();
    assert_eq!(mode(&dir.join(KEY_FILE)), 0o600);
    assert_eq!(mode(&dir), 0o755, "an existing out dir keeps its mode");
}

#[test]
fn old_versions_are_removed() {
    let ca = TestCa::new();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    for _ in 0..5 {
        write_identity(dir, &ca.issue("a")).unwrap();
    }
    let left = versions(dir);
    assert_eq!(left.len(), 1, "{left:?}");
    let data = fs::read_link(dir.join(DATA_LINK)).unwrap();
    assert_eq!(data, Path::new(&left[0]));
    assert!(!dir.join(DATA_TMP).exists());
    // Only our names are in the dir.
    let mut names: Vec<_> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(names.len(), 5, "{names:?}");
}

#[test]
fn write_bundle_keeps_cert_and_key() {
    let ca = TestCa::new();
    let other = TestCa::new();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    assert!(matches!(
        write_bundle(dir, &ca.authority.bundle().roots),
        Err(Error::NoIdentity { .. })
    ));
    let id = ca.issue("a");
    write_identity(dir, &id).unwrap();
    let mut roots = id.bundle.clone();
    roots.extend(other.authority.bundle().roots);
    write_bundle(dir, &roots).unwrap();
    let back = read_identity(dir).unwrap().unwrap();
    assert_eq!(back.chain, id.chain);
    assert_eq!(back.key.pkcs8_der(), id.key.pkcs8_der());
    assert_eq!(back.bundle, roots);
    assert_eq!(versions(dir).len(), 1);
}

#[test]
fn plain_files_are_read_and_upgraded() {
    let ca = TestCa::new();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let old = ca.issue("old");
    write_plain(dir, &old, &old);
    fs::write(dir.join("unrelated.txt"), "keep me").unwrap();
    assert!(same(&read_identity(dir).unwrap().unwrap(), &old));

    let new = ca.issue("new");
    write_identity(dir, &new).unwrap();
    assert!(same(&read_identity(dir).unwrap().unwrap(), &new));
    assert_links(dir);
    assert_eq!(mode(&dir.join(KEY_FILE)), 0o600);
    assert_eq!(
        versions(dir).len(),
        1,
        "the copy of the plain files is cleaned up"
    );
    assert_eq!(
        fs::read_to_string(dir.join("unrelated.txt")).unwrap(),
        "keep me"
    );
    assert!(!dir.join(format!("{LINK_TMP_PREFIX}{CERT_FILE}")).exists());
}

#[test]
fn upgrade_shows_identical_bytes_before_the_swap() {
    let ca = TestCa::new();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let old = ca.issue("old");
    write_plain(dir, &old, &old);
    upgrade_plain_files(dir).unwrap();
    // Every name is now a link, and still shows the old, matching set.
    assert_links(dir);
    assert_eq!(
        fs::read_to_string(dir.join(CERT_FILE)).unwrap(),
        old.chain_pem()
    );
    assert!(same(&read_identity(dir).unwrap().unwrap(), &old));
}

#[test]
fn mismatched_or_broken_sets_are_errors() {
    let ca = TestCa::new();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let a = ca.issue("a");
    let b = ca.issue("b");
    write_plain(dir, &a, &b);
    let err = read_identity(dir).unwrap_err();
    assert!(matches!(err, Error::KeyMismatch { .. }), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains("key.pem") && !msg.contains("PRIVATE KEY"),
        "{msg}"
    );

    // Refuses to write a mismatched set.
    let bad = Identity {
        chain: a.chain.clone(),
        key: b.try_clone_key().unwrap(),
        bundle: a.bundle.clone(),
    };
    assert!(matches!(write_identity(dir, &bad), Err(Error::Invalid(_))));

    fs::write(dir.join(CERT_FILE), "not pem").unwrap();
    let err = read_identity(dir).unwrap_err();
    assert!(matches!(&err, Error::Unparseable { path, .. } if path.ends_with(CERT_FILE)));

    fs::remove_file(dir.join(BUNDLE_FILE)).unwrap();
    let err = read_identity(dir).unwrap_err();
    assert!(matches!(&err, Error::Incomplete { missing, .. } if missing == BUNDLE_FILE));
}

#[test]
fn debug_redacts_the_key() {
    let ca = TestCa::new();
    let id = ca.issue("a");
    let dbg = format!("{id:?}");
    assert!(dbg.contains("spiffe://example.org/a"), "{dbg}");
    assert!(dbg.contains("redacted"), "{dbg}");
    let pem = id.key.to_pem();
    let body = pem.lines().nth(1).unwrap();
    assert!(!dbg.contains(body));
}

/// The property the layout exists for: a reader looping while a writer rotates never
/// sees a torn file or a key paired with another certificate.
#[test]
fn concurrent_reader_never_sees_a_torn_or_mismatched_set() {
    const ROTATIONS: usize = 200;
    let ca = TestCa::new();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    // Issue up front so the writer spends its time swapping, not signing.
    let ids: Vec<Identity> = (0..ROTATIONS).map(|_| ca.issue("rotating")).collect();
    write_identity(&dir, &ids[0]).unwrap();

    let done = Arc::new(AtomicBool::new(false));
    let start = Arc::new(Barrier::new(3));
    let reads = Arc::new(AtomicUsize::new(0));
    let set_reader = {
        let (dir, done, start, reads) = (dir.clone(), done.clone(), start.clone(), reads.clone());
        std::thread::spawn(move || {
            start.wait();
            while !done.load(Ordering::Acquire) {
                match read_identity(&dir) {
                    Ok(Some(id)) => id.validate().unwrap(),
                    other => panic!("reader saw {other:?}"),
                }
                reads.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    // What a plain PEM consumer does: open one stable name at a time.
    let file_reader = {
        let (dir, done, start) = (dir.clone(), done.clone(), start.clone());
        std::thread::spawn(move || {
            start.wait();
            // A name can briefly be missing (NotFound) when the reader resolved `..data`
            // just before a swap and the old version was removed before it opened the
            // file, as with Kubernetes volumes; what it does open is always whole.
            let read = |name| match fs::read(dir.join(name)) {
                Ok(bytes) => Some(bytes),
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(e) => panic!("{name}: {e}"),
            };
            while !done.load(Ordering::Acquire) {
                if let Some(cert) = read(CERT_FILE) {
                    assert_eq!(writ_ca::x509::certs_from_pem(&cert).unwrap().len(), 2);
                }
                if let Some(key) = read(KEY_FILE) {
                    PrivateKey::from_pem(std::str::from_utf8(&key).unwrap()).unwrap();
                }
            }
        })
    };
    start.wait();
    for id in &ids[1..] {
        write_identity(&dir, id).unwrap();
    }
    done.store(true, Ordering::Release);
    set_reader.join().unwrap();
    file_reader.join().unwrap();
    assert!(reads.load(Ordering::Relaxed) > 0);
    assert!(same(
        &read_identity(&dir).unwrap().unwrap(),
        &ids[ROTATIONS - 1]
    ));
    assert_eq!(versions(&dir).len(), 1);
}
