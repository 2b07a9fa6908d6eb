//! Certificates made the way Istio's tasks make them: openssl, a
//! self-signed root and leaves signed by it (X.509 version 1, as
//! `openssl x509 -req` writes them). Files live in a directory removed
//! when the Pki is dropped.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

pub struct Pki {
    pub dir: PathBuf,
    serial: AtomicUsize,
}

fn openssl(dir: &PathBuf, args: &[&str]) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl must be installed (scripts/setup.sh installs it)");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Pki {
    pub fn new(tag: &str) -> Pki {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "weft-pki-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&dir).unwrap();
        Pki {
            dir,
            serial: AtomicUsize::new(0),
        }
    }

    /// A self-signed root `<name>.crt`/`<name>.key`.
    pub fn root(&self, name: &str) {
        let subj = format!("/O={name} Inc./CN={name}");
        let (key, crt) = (format!("{name}.key"), format!("{name}.crt"));
        openssl(
            &self.dir,
            &[
                "req", "-x509", "-sha256", "-nodes", "-days", "365", "-newkey", "rsa:2048",
                "-subj", &subj, "-keyout", &key, "-out", &crt,
            ],
        );
    }

    /// A leaf `<cn>.crt`/`<cn>.key` for common name `cn`, signed by `root`.
    pub fn leaf(&self, root: &str, cn: &str) {
        self.sign(root, cn, &[]);
    }

    /// A version 3 leaf with `cn` as its DNS subject alt name too, as a
    /// public server's certificate is (what a client that originates TLS
    /// checks names against).
    pub fn server_leaf(&self, root: &str, cn: &str) {
        let ext = format!("{cn}.ext");
        std::fs::write(self.dir.join(&ext), format!("subjectAltName=DNS:{cn}\n")).unwrap();
        self.sign(root, cn, &["-extfile", &ext]);
    }

    fn sign(&self, root: &str, cn: &str, extra: &[&str]) {
        let subj = format!("/CN={cn}/O={cn} organization");
        let (key, csr, crt) = (
            format!("{cn}.key"),
            format!("{cn}.csr"),
            format!("{cn}.crt"),
        );
        openssl(
            &self.dir,
            &[
                "req", "-out", &csr, "-newkey", "rsa:2048", "-nodes", "-keyout", &key, "-subj",
                &subj,
            ],
        );
        let serial = self.serial.fetch_add(1, Ordering::SeqCst).to_string();
        let (ca, ca_key) = (format!("{root}.crt"), format!("{root}.key"));
        openssl(
            &self.dir,
            &[
                "x509",
                "-req",
                "-sha256",
                "-days",
                "365",
                "-CA",
                &ca,
                "-CAkey",
                &ca_key,
                "-set_serial",
                &serial,
                "-in",
                &csr,
                "-out",
                &crt,
            ]
            .iter()
            .chain(extra)
            .copied()
            .collect::<Vec<&str>>(),
        );
    }

    pub fn path(&self, file: &str) -> String {
        self.dir.join(file).display().to_string()
    }

    pub fn read(&self, file: &str) -> Vec<u8> {
        std::fs::read(self.dir.join(file)).unwrap()
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
