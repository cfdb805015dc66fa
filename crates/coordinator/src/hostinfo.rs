//! Limits on the `Hostinfo` a node reports (register and map requests).
//! It is stored as sent and pushed to every peer in every full map, so
//! one node with megabyte strings would cost every node that much per map
//! (and a few such nodes push maps past the client's 16 MiB frame limit).
//! A request over a limit is refused with `400` and a sentence naming the
//! field; nothing is stored.

use serde_json::Value;

/// Largest `Hostinfo`, serialised.
pub const MAX_HOSTINFO_BYTES: usize = 16 * 1024;
/// Longest string anywhere in it (an RSA-4096 SSH host key is ~750).
pub const MAX_HOSTINFO_STRING: usize = 1024;
/// Most entries in any list in it (services, routes, tags, host keys).
pub const MAX_HOSTINFO_LIST: usize = 128;

/// Why a `Hostinfo` is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostinfoError {
    /// The whole object is too large.
    #[error("Hostinfo is {size} bytes; the limit is {limit}")]
    TooLarge {
        /// Its size, serialised.
        size: usize,
        /// [`MAX_HOSTINFO_BYTES`].
        limit: usize,
    },
    /// One string is too long.
    #[error("Hostinfo.{field} is {len} bytes long; the limit is {limit}")]
    StringTooLong {
        /// Where (`Services[3].Description`).
        field: String,
        /// Its length.
        len: usize,
        /// [`MAX_HOSTINFO_STRING`].
        limit: usize,
    },
    /// One list is too long.
    #[error("Hostinfo.{field} has {len} entries; the limit is {limit}")]
    ListTooLong {
        /// Where.
        field: String,
        /// Its length.
        len: usize,
        /// [`MAX_HOSTINFO_LIST`].
        limit: usize,
    },
}

/// Checks `hostinfo` (as it would be stored) against the limits.
pub fn check_hostinfo(hostinfo: &Value) -> Result<(), HostinfoError> {
    walk(hostinfo, &mut String::new())?;
    let size = serde_json::to_vec(hostinfo).map_or(usize::MAX, |v| v.len());
    if size > MAX_HOSTINFO_BYTES {
        return Err(HostinfoError::TooLarge {
            size,
            limit: MAX_HOSTINFO_BYTES,
        });
    }
    Ok(())
}

fn walk(v: &Value, path: &mut String) -> Result<(), HostinfoError> {
    match v {
        Value::String(s) if s.len() > MAX_HOSTINFO_STRING => Err(HostinfoError::StringTooLong {
            field: path.clone(),
            len: s.len(),
            limit: MAX_HOSTINFO_STRING,
        }),
        Value::Array(items) => {
            if items.len() > MAX_HOSTINFO_LIST {
                return Err(HostinfoError::ListTooLong {
                    field: path.clone(),
                    len: items.len(),
                    limit: MAX_HOSTINFO_LIST,
                });
            }
            for (i, item) in items.iter().enumerate() {
                let len = path.len();
                path.push_str(&format!("[{i}]"));
                walk(item, path)?;
                path.truncate(len);
            }
            Ok(())
        }
        Value::Object(map) => {
            for (k, item) in map {
                let len = path.len();
                if !path.is_empty() {
                    path.push('.');
                }
                // Keys come from our typed struct, but cap what we echo.
                path.push_str(&k.chars().take(64).collect::<String>());
                walk(item, path)?;
                path.truncate(len);
            }
            Ok(())
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_real_hostinfo_passes() {
        let h = json!({
            "IPNVersion": "1.90.9", "OS": "linux", "Hostname": "engine-0",
            "Services": [{"Proto": "tcp", "Port": 22, "Description": "sshd"}],
            "SSH_HostKeys": ["ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIB"],
            "NetInfo": {"PreferredDERP": 1}
        });
        assert_eq!(check_hostinfo(&h), Ok(()));
    }

    #[test]
    fn long_strings_long_lists_and_large_objects_are_named() {
        let long = "x".repeat(MAX_HOSTINFO_STRING + 1);
        let e =
            check_hostinfo(&json!({"Services": [{"Description": "ok"}, {"Description": long}]}))
                .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!(
                "Hostinfo.Services[1].Description is {} bytes long; the limit is {MAX_HOSTINFO_STRING}",
                MAX_HOSTINFO_STRING + 1
            )
        );
        let list: Vec<u32> = (0..=MAX_HOSTINFO_LIST as u32).collect();
        assert!(matches!(
            check_hostinfo(&json!({"RoutableIPs": list})),
            Err(HostinfoError::ListTooLong { .. })
        ));
        // Many fields each under the string limit, together too large.
        let many: Vec<String> = (0..100).map(|_| "y".repeat(500)).collect();
        assert!(matches!(
            check_hostinfo(&json!({"SSH_HostKeys": many})),
            Err(HostinfoError::TooLarge { .. })
        ));
    }
}
