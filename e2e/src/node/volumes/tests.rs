use super::*;

fn keyed(items: &[(&str, &str)], optional: bool) -> Keyed {
    Keyed {
        object: "settings".into(),
        items: items
            .iter()
            .map(|(k, p)| KeyToPath {
                key: (*k).into(),
                path: (*p).into(),
                ..KeyToPath::default()
            })
            .collect(),
        optional,
        default_mode: 0o640,
    }
}

fn data() -> BTreeMap<String, Vec<u8>> {
    BTreeMap::from([("a".into(), b"1".to_vec()), ("b".into(), b"2".to_vec())])
}

#[test]
fn every_key_is_a_file_without_items() {
    let f = files("configmap", "ns", &keyed(&[], false), Some(&data())).unwrap();
    assert_eq!(
        f,
        vec![
            (PathBuf::from("a"), b"1".to_vec(), 0o640),
            (PathBuf::from("b"), b"2".to_vec(), 0o640)
        ]
    );
}

#[test]
fn items_pick_keys_and_paths() {
    let f = files(
        "secret",
        "ns",
        &keyed(&[("b", "dir/x")], false),
        Some(&data()),
    )
    .unwrap();
    assert_eq!(f, vec![(PathBuf::from("dir/x"), b"2".to_vec(), 0o640)]);
}

#[test]
fn missing_things_are_errors_unless_optional() {
    let e = files("configmap", "ns", &keyed(&[], false), None).unwrap_err();
    assert_eq!(e, "configmap ns/settings not found");
    assert!(
        files("configmap", "ns", &keyed(&[], true), None)
            .unwrap()
            .is_empty()
    );
    let e = files("secret", "ns", &keyed(&[("zz", "z")], false), Some(&data())).unwrap_err();
    assert!(e.contains("no key \"zz\""), "{e}");
    let f = files("secret", "ns", &keyed(&[("zz", "z")], true), Some(&data())).unwrap();
    assert!(f.is_empty());
}

#[test]
fn item_paths_stay_inside_the_volume() {
    for bad in ["../x", "/etc/passwd", "a/../../x", "..data", ""] {
        let e = files(
            "configmap",
            "ns",
            &keyed(&[("a", bad)], false),
            Some(&data()),
        );
        assert!(e.is_err(), "{bad:?} accepted");
    }
}

#[test]
fn updates_swap_all_files_at_once_and_drop_removed_keys() {
    let dir = std::env::temp_dir().join(format!("muster-volume-test-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let one = vec![
        (PathBuf::from("a"), b"1".to_vec(), 0o600),
        (PathBuf::from("d/x"), b"x".to_vec(), 0o644),
    ];
    write(&dir, &one).unwrap();
    assert_eq!(std::fs::read(dir.join("a")).unwrap(), b"1");
    assert_eq!(std::fs::read(dir.join("d/x")).unwrap(), b"x");
    let mode = std::fs::metadata(dir.join("a"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(dir.join("a").symlink_metadata().unwrap().is_symlink());

    let two = vec![(PathBuf::from("a"), b"2".to_vec(), 0o600)];
    write(&dir, &two).unwrap();
    assert_eq!(std::fs::read(dir.join("a")).unwrap(), b"2");
    assert!(
        dir.join("d").symlink_metadata().is_err(),
        "removed key left"
    );
    let hidden: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("..") && n != "..data")
        .collect();
    assert_eq!(hidden.len(), 1, "old versions are removed: {hidden:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_volume_is_refreshed_as_late_as_by_a_kubelet() {
    let r = VolumeRefresh::default();
    let mut rng = Rng::seeded(7);
    let waits: Vec<Duration> = (0..200).map(|_| r.next_sync(&mut rng)).collect();
    let (min, max) = (
        waits.iter().min().copied().unwrap_or_default(),
        waits.iter().max().copied().unwrap_or_default(),
    );
    assert!(
        min >= Duration::from_secs(60) && max <= Duration::from_secs(90),
        "{min:?}..{max:?}"
    );
    assert!(
        max - min > Duration::from_secs(10),
        "jittered: {min:?}..{max:?}"
    );
    assert_eq!(r.cache_ttl, Duration::ZERO, "the Watch strategy by default");
}

fn token_volume(sources: serde_json::Value) -> Volume {
    serde_json::from_value(
        serde_json::json!({"name": "kube-api-access", "projected": {"sources": sources}}),
    )
    .expect("a volume")
}

fn token_sources() -> serde_json::Value {
    serde_json::json!([
        {"serviceAccountToken": {"path": "token", "expirationSeconds": 3607}},
        {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
        {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"fieldPath": "metadata.namespace"}}]}},
    ])
}

#[test]
fn the_service_account_folder_is_served_for_a_token_volume_only() {
    assert_eq!(
        service_account_volume(&token_volume(token_sources()), "shop"),
        Ok(())
    );
    let secret = |name: &str| -> Volume {
        serde_json::from_value(serde_json::json!({"name": "t", "secret": {"secretName": name}}))
            .expect("a volume")
    };
    assert_eq!(
        service_account_volume(&secret("shop-token-x7k2p"), "shop"),
        Ok(()),
        "the admission plugin's Secret"
    );
    let other = service_account_volume(&secret("shop-tls"), "shop").expect_err("not a token");
    assert!(other.contains("is not a token Secret"), "{other}");
    let mut audience = token_sources();
    audience[0]["serviceAccountToken"]["audience"] = "vault".into();
    assert!(
        service_account_volume(&token_volume(audience), "shop").is_err(),
        "another audience"
    );
    let mut without_ca = token_sources();
    without_ca.as_array_mut().expect("sources").remove(1);
    let mut other_path = token_sources();
    other_path[0]["serviceAccountToken"]["path"] = "jwt".into();
    let mut more = token_sources();
    more.as_array_mut()
        .expect("sources")
        .push(serde_json::json!({"secret": {"name": "other"}}));
    let empty: Volume =
        serde_json::from_value(serde_json::json!({"name": "scratch", "emptyDir": {}}))
            .expect("a volume");
    for refused in [
        token_volume(without_ca),
        token_volume(other_path),
        token_volume(more),
        empty,
    ] {
        let e = service_account_volume(&refused, "shop").expect_err("not what the node serves");
        assert!(e.contains("serves only the service-account token"), "{e}");
    }
}

#[test]
fn only_containers_that_mount_the_token_get_it() {
    let container = |mounts: serde_json::Value| -> Container {
        serde_json::from_value(serde_json::json!({"name": "c", "volumeMounts": mounts}))
            .expect("a container")
    };
    let sa = Path::new("/node/pods/ns_p/serviceaccount");
    let with = container(serde_json::json!([
        {"name": "kube-api-access", "mountPath": format!("{SERVICE_ACCOUNT_DIR}/"), "readOnly": false}
    ]));
    assert_eq!(
        mounts(&with, &[], sa).expect("mounts"),
        vec![(sa.to_owned(), PathBuf::from(SERVICE_ACCOUNT_DIR), true)],
        "read-only whatever the mount says"
    );
    assert_eq!(
        mounts(&container(serde_json::json!([])), &[], sa).expect("mounts"),
        vec![]
    );
}
