//! Pod identities for the mesh CA: each proxy gets a token naming its
//! pod's namespace, service account and name, signed with the mesh's
//! token key, as a Kubernetes pod gets a projected service-account token.
//! The key lives with the mesh's state; the control plane checks tokens
//! with it.

use std::path::{Path, PathBuf};

use weft_ca::token::{PodClaim, TokenKey};
use weft_registry::Workload;

pub(crate) struct Tokens {
    key: TokenKey,
    pub key_file: PathBuf,
    dir: PathBuf,
}

impl Tokens {
    /// The mesh's token key (made on first use) under `state`.
    pub fn open(state: &Path) -> anyhow::Result<Tokens> {
        let key_file = state.join("token-key");
        let key = TokenKey::load_or_create(&key_file)?;
        let dir = state.join("tokens");
        std::fs::create_dir_all(&dir)?;
        {
            use std::os::unix::fs::PermissionsExt;
            // Proxies (uid 1337) open their own file by name; no one lists.
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711))?;
        }
        Ok(Tokens { key, key_file, dir })
    }

    /// Writes `workload`'s token where its proxy (uid `owner`) can read
    /// it, and no one else; returns the path.
    pub fn issue(&self, workload: &Workload, owner: Option<u32>) -> anyhow::Result<PathBuf> {
        use std::os::unix::fs::OpenOptionsExt;
        let sa = match workload.service_account.as_str() {
            "" => "default",
            sa => sa,
        };
        let token = self.key.mint(&PodClaim {
            namespace: workload.namespace.clone(),
            service_account: sa.to_string(),
            pod: workload.name.clone(),
        });
        // A namespace has no dot, so `<ns>.<pod>` names one pod only.
        let path = self
            .dir
            .join(format!("{}.{}", workload.namespace, workload.name));
        let tmp = std::path::PathBuf::from(format!("{}.tmp", path.display()));
        let _ = std::fs::remove_file(&tmp);
        // Made 0600 from the start, owned by the proxy before it holds
        // the token: never readable by anyone else, even for a moment.
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        if let Some(uid) = owner {
            std::os::unix::fs::chown(&tmp, Some(uid), None)?;
        }
        std::io::Write::write_all(&mut f, token.as_bytes())?;
        std::fs::rename(&tmp, &path)?;
        Ok(path)
    }
}
