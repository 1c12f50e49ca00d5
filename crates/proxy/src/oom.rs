//! kube-proxy's `oomScoreAdj`: the agent's own `/proc/self/oom_score_adj`,
//! written at start (kube-proxy's default -999, so the OOM killer picks
//! the proxy last).

use std::path::Path;

/// Writes `value` to `path` (an `oom_score_adj` file) when it holds
/// something else. Returns the old value when it wrote, `None` when the
/// value was already there. Lowering the score needs `CAP_SYS_RESOURCE`:
/// without it the kernel says `EACCES`, which the caller logs (kube-proxy
/// too goes on without it).
pub fn apply(path: &Path, value: i32) -> std::io::Result<Option<i32>> {
    let old = std::fs::read_to_string(path)?;
    let old: i32 = old.trim().parse().map_err(|_| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("{}: `{}` is not a number", path.display(), old.trim()),
        )
    })?;
    if old == value {
        return Ok(None);
    }
    std::fs::write(path, value.to_string())?;
    Ok(Some(old))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_only_a_different_value() {
        let path = std::env::temp_dir().join(format!("kipvs-oom-{}", std::process::id()));
        std::fs::write(&path, "0\n").unwrap();
        assert_eq!(apply(&path, -999).unwrap(), Some(0));
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "-999");
        assert_eq!(apply(&path, -999).unwrap(), None);
        std::fs::write(&path, "junk").unwrap();
        assert!(apply(&path, 1).is_err());
        std::fs::remove_file(&path).unwrap();
        assert!(apply(&path, 1).is_err());
    }
}
