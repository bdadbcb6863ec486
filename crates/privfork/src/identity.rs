//! Users and groups, resolved by name or numeric id, before any fork.
//!
//! Resolution reads the user and group databases (`/etc/passwd`, NSS), which
//! is not async-signal-safe and may open files, so it happens in the parent;
//! the child only applies the ids it was given.

use std::io;

use rustix::process::{Gid, Uid};

use crate::sys;

/// A target identity: user id, primary group id and supplementary groups.
///
/// Build it with [`Identity::user`] (a name or a numeric uid), refine the
/// groups with [`Identity::with_group`] or [`Identity::with_groups`], and
/// hand it to [`crate::privdrop::drop_privileges`] or [`crate::ForkAs`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    uid: Uid,
    gid: Gid,
    groups: Vec<Gid>,
    name: Option<String>,
}

/// Error of resolving a user or group.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    /// No user of that name in the user database.
    #[error("unknown user {name:?}: no such entry in the user database")]
    UnknownUser {
        /// The name that was looked up.
        name: String,
    },
    /// No group of that name in the group database.
    #[error("unknown group {name:?}: no such entry in the group database")]
    UnknownGroup {
        /// The name that was looked up.
        name: String,
    },
    /// The text is neither a valid name nor a numeric id.
    #[error("invalid {what} {spec:?}: {reason}")]
    InvalidSpec {
        /// "user" or "group".
        what: &'static str,
        /// The text given.
        spec: String,
        /// Why it is invalid.
        reason: &'static str,
    },
    /// A uid without a user database entry whose same-numbered gid is a
    /// named group: its group must be named explicitly.
    #[error(
        "uid {uid} has no user entry and gid {uid} is the group {group:?}; \
         name the group explicitly (Identity::user_group)"
    )]
    NeedsGroup {
        /// The uid.
        uid: u32,
        /// The name of the group with the same number.
        group: String,
    },
    /// The database itself could not be read.
    #[error("looking up {what} {spec:?} failed")]
    Lookup {
        /// "user", "group" or "group list".
        what: &'static str,
        /// The name or id looked up.
        spec: String,
        /// The underlying error.
        #[source]
        source: io::Error,
    },
}

const RESERVED: &str = "4294967295 is the reserved \"no change\" id";

fn check_id(what: &'static str, id: u32) -> Result<(), ResolveError> {
    if id == u32::MAX {
        return Err(ResolveError::InvalidSpec {
            what,
            spec: id.to_string(),
            reason: RESERVED,
        });
    }
    Ok(())
}

/// A parsed user or group spec.
enum Spec<'a> {
    Id(u32),
    Name(&'a str),
}

fn parse_spec<'a>(what: &'static str, spec: &'a str) -> Result<Spec<'a>, ResolveError> {
    let invalid = |reason| ResolveError::InvalidSpec {
        what,
        spec: spec.to_owned(),
        reason,
    };
    if spec.is_empty() {
        return Err(invalid("empty"));
    }
    if spec.bytes().all(|b| b.is_ascii_digit()) {
        let id: u32 = spec
            .parse()
            .map_err(|_| invalid("numeric id out of range"))?;
        // (uid_t)-1 means "unchanged" to the set*id calls: never a target.
        if id == u32::MAX {
            return Err(invalid(RESERVED));
        }
        return Ok(Spec::Id(id));
    }
    if spec.contains(['\0', ':', '/', '\n']) || spec.chars().any(char::is_whitespace) {
        return Err(invalid("names may not contain NUL, ':', '/' or whitespace"));
    }
    Ok(Spec::Name(spec))
}

impl Identity {
    /// Resolves a user given by name (`"nobody"`) or numeric uid (`"65534"`).
    ///
    /// With a user database entry, the primary group and the supplementary
    /// groups are the user's (from `getgrouplist`). A numeric uid that has
    /// no entry is still accepted: its primary group is then the gid of the
    /// same number, with no other group — never root's group 0 by accident —
    /// provided no group of that number exists (gid 6 is `disk` on Debian):
    /// then name the group with [`Identity::user_group`].
    ///
    /// # Errors
    ///
    /// [`ResolveError::UnknownUser`] naming the user, [`ResolveError::InvalidSpec`]
    /// for text that is neither a name nor an id, [`ResolveError::NeedsGroup`]
    /// for an entry-less uid whose same-numbered gid is a named group,
    /// [`ResolveError::Lookup`] if the database cannot be read.
    pub fn user(spec: &str) -> Result<Self, ResolveError> {
        let lookup_err = |source| ResolveError::Lookup {
            what: "user",
            spec: spec.to_owned(),
            source,
        };
        let entry = match parse_spec("user", spec)? {
            Spec::Id(id) => {
                let uid = Uid::from_raw(id);
                match sys::user_by_uid(uid).map_err(lookup_err)? {
                    Some(e) => e,
                    None => {
                        let gid = Gid::from_raw(id);
                        let named =
                            sys::group_name(gid).map_err(|source| ResolveError::Lookup {
                                what: "group",
                                spec: id.to_string(),
                                source,
                            })?;
                        if let Some(group) = named {
                            return Err(ResolveError::NeedsGroup { uid: id, group });
                        }
                        return Ok(Self {
                            uid,
                            gid,
                            groups: vec![gid],
                            name: None,
                        });
                    }
                }
            }
            Spec::Name(name) => sys::user_by_name(name)
                .map_err(lookup_err)?
                .ok_or_else(|| ResolveError::UnknownUser {
                    name: name.to_owned(),
                })?,
        };
        let mut groups =
            sys::group_list(&entry.name, entry.gid).map_err(|source| ResolveError::Lookup {
                what: "group list",
                spec: entry.name.clone(),
                source,
            })?;
        normalize(&mut groups, entry.gid);
        Ok(Self {
            uid: entry.uid,
            gid: entry.gid,
            groups,
            name: Some(entry.name),
        })
    }

    /// Resolves a user and a group given separately (names or numeric
    /// ids); the group is the only one. For a uid without a user database
    /// entry this is how to choose its group.
    ///
    /// # Errors
    ///
    /// As [`Identity::user`] (but for `NeedsGroup`) and [`resolve_group`].
    pub fn user_group(user: &str, group: &str) -> Result<Self, ResolveError> {
        let gid = Gid::from_raw(resolve_group(group)?);
        let (uid, name) = match parse_spec("user", user)? {
            Spec::Id(id) => {
                let uid = Uid::from_raw(id);
                let entry = sys::user_by_uid(uid).map_err(|source| ResolveError::Lookup {
                    what: "user",
                    spec: user.to_owned(),
                    source,
                })?;
                (uid, entry.map(|e| e.name))
            }
            Spec::Name(_) => {
                let me = Self::user(user)?;
                (me.uid, me.name)
            }
        };
        Ok(Self {
            uid,
            gid,
            groups: vec![gid],
            name,
        })
    }

    /// An identity from raw ids, with `gid` as the only group.
    ///
    /// # Errors
    ///
    /// [`ResolveError::InvalidSpec`] for 4294967295, which the set*id calls
    /// read as "no change".
    pub fn from_ids(uid: u32, gid: u32) -> Result<Self, ResolveError> {
        check_id("user", uid)?;
        check_id("group", gid)?;
        let gid = Gid::from_raw(gid);
        Ok(Self {
            uid: Uid::from_raw(uid),
            gid,
            groups: vec![gid],
            name: None,
        })
    }

    /// Replaces the primary group by `group` (a name or numeric gid) and
    /// makes it the only group.
    ///
    /// # Errors
    ///
    /// [`ResolveError::UnknownGroup`] naming the group, or as for
    /// [`Identity::user`].
    pub fn with_group(mut self, group: &str) -> Result<Self, ResolveError> {
        let gid = Gid::from_raw(resolve_group(group)?);
        self.gid = gid;
        self.groups = vec![gid];
        Ok(self)
    }

    /// Sets the supplementary groups explicitly (the primary group is
    /// always kept in the list).
    ///
    /// # Errors
    ///
    /// [`ResolveError::InvalidSpec`] for 4294967295 ("no change").
    pub fn with_groups(
        mut self,
        groups: impl IntoIterator<Item = u32>,
    ) -> Result<Self, ResolveError> {
        let mut list = Vec::new();
        for g in groups {
            check_id("group", g)?;
            list.push(Gid::from_raw(g));
        }
        normalize(&mut list, self.gid);
        self.groups = list;
        Ok(self)
    }

    /// The target user id.
    pub fn uid(&self) -> u32 {
        self.uid.as_raw()
    }

    /// The target primary group id.
    pub fn gid(&self) -> u32 {
        self.gid.as_raw()
    }

    /// The target supplementary groups, sorted, primary group included.
    pub fn groups(&self) -> Vec<u32> {
        self.groups.iter().map(|g| g.as_raw()).collect()
    }

    /// The user name, if the uid has a user database entry.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    pub(crate) fn raw_uid(&self) -> Uid {
        self.uid
    }

    pub(crate) fn raw_gid(&self) -> Gid {
        self.gid
    }

    pub(crate) fn raw_groups(&self) -> &[Gid] {
        &self.groups
    }
}

impl std::fmt::Display for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.name {
            Some(n) => write!(f, "{n} (uid {}, gid {})", self.uid(), self.gid()),
            None => write!(f, "uid {}, gid {}", self.uid(), self.gid()),
        }
    }
}

/// Resolves a group given by name or numeric gid.
///
/// # Errors
///
/// [`ResolveError::UnknownGroup`] naming it, [`ResolveError::InvalidSpec`],
/// [`ResolveError::Lookup`].
pub fn resolve_group(spec: &str) -> Result<u32, ResolveError> {
    match parse_spec("group", spec)? {
        Spec::Id(id) => Ok(id),
        Spec::Name(name) => sys::group_by_name(name)
            .map_err(|source| ResolveError::Lookup {
                what: "group",
                spec: spec.to_owned(),
                source,
            })?
            .map(|g| g.gid.as_raw())
            .ok_or_else(|| ResolveError::UnknownGroup {
                name: name.to_owned(),
            }),
    }
}

fn normalize(groups: &mut Vec<Gid>, primary: Gid) {
    groups.push(primary);
    groups.sort_unstable_by_key(|g| g.as_raw());
    groups.dedup();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_resolves_by_name_and_id() {
        let by_name = Identity::user("root").unwrap();
        let by_id = Identity::user("0").unwrap();
        assert_eq!(by_name.uid(), 0);
        assert_eq!(by_name, by_id);
        assert_eq!(by_name.name(), Some("root"));
    }

    #[test]
    fn nobody_has_its_own_primary_group() {
        let id = Identity::user("nobody").unwrap();
        assert_eq!(id.uid(), 65534);
        assert_ne!(id.gid(), 0);
        assert!(!id.groups().contains(&0), "{:?}", id.groups());
    }

    #[test]
    fn numeric_uid_without_entry_gets_same_numbered_group() {
        let id = Identity::user("4000000").unwrap();
        assert_eq!(
            (id.uid(), id.gid(), id.groups()),
            (4000000, 4000000, vec![4000000])
        );
        assert_eq!(id.name(), None);
    }

    #[test]
    fn entryless_uid_with_a_named_same_gid_needs_a_group() {
        // gid 0 is root's group; uid 0 has an entry, so find an entry-less
        // uid whose same-numbered group exists (Debian: 6 disk, 26 tape).
        let uid = (1..1000u32)
            .find(|&n| {
                sys::user_by_uid(Uid::from_raw(n)).unwrap().is_none()
                    && sys::group_name(Gid::from_raw(n)).unwrap().is_some()
            })
            .expect("this system has a group without a same-numbered user");
        let e = Identity::user(&uid.to_string()).unwrap_err();
        assert!(matches!(e, ResolveError::NeedsGroup { .. }), "{e}");
        let id = Identity::user_group(&uid.to_string(), "65534").unwrap();
        assert_eq!((id.uid(), id.gid(), id.groups()), (uid, 65534, vec![65534]));
    }

    #[test]
    fn unknown_user_is_named() {
        let e = Identity::user("no-such-user-privfork").unwrap_err();
        assert!(matches!(e, ResolveError::UnknownUser { .. }));
        assert!(e.to_string().contains("no-such-user-privfork"), "{e}");
    }

    #[test]
    fn unknown_group_is_named() {
        let e = resolve_group("no-such-group-privfork").unwrap_err();
        assert!(e.to_string().contains("no-such-group-privfork"), "{e}");
    }

    #[test]
    fn bad_specs_are_refused_with_reason() {
        for bad in ["", "a b", "a:b", "4294967295", "99999999999", "x\0y"] {
            let e = Identity::user(bad).unwrap_err();
            assert!(
                matches!(e, ResolveError::InvalidSpec { .. }),
                "{bad:?}: {e}"
            );
        }
    }

    #[test]
    fn with_group_replaces_groups() {
        let id = Identity::user("nobody")
            .unwrap()
            .with_group("4242")
            .unwrap();
        assert_eq!((id.gid(), id.groups()), (4242, vec![4242]));
        let id = id.with_groups([7, 3, 7]).unwrap();
        assert_eq!(id.groups(), vec![3, 7, 4242]);
        assert!(id.clone().with_groups([u32::MAX]).is_err());
        assert!(Identity::from_ids(5, u32::MAX).is_err());
        assert!(Identity::from_ids(u32::MAX, 5).is_err());
    }
}
