//! Aliases: other names for one or more indices, kept in each index's
//! metadata as Elasticsearch keeps them. Searches through an alias read
//! every index it names; writes go to its write index (the index marked
//! `is_write_index`, or the only index it names).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use super::{Indices, validate_name, wildcard_match};
use crate::error::{Error, Result};
use crate::index::{AliasMeta, Index};

/// One action of `POST /_aliases`, its index expressions already resolved.
#[derive(Debug, Clone, PartialEq)]
pub enum AliasAction {
    /// Makes `alias` name each of `indices`.
    Add {
        /// Concrete index names.
        indices: Vec<String>,
        /// A concrete alias name.
        alias: String,
        /// What the alias says of these indices.
        meta: AliasMeta,
    },
    /// Removes the aliases matching `aliases` (names or wildcards) from
    /// each of `indices`.
    Remove {
        /// Concrete index names.
        indices: Vec<String>,
        /// Alias names and wildcards.
        aliases: Vec<String>,
        /// `Some(true)`: matching nothing fails the request.
        must_exist: Option<bool>,
    },
    /// Deletes each of `indices`.
    RemoveIndex {
        /// Concrete index names.
        indices: Vec<String>,
    },
}

/// Per index, the aliases that name it.
pub type AliasState = BTreeMap<String, BTreeMap<String, AliasMeta>>;

/// Elasticsearch's rules for alias names: those of index names, but for
/// case (an alias may have capitals).
pub fn validate_alias_name(name: &str) -> Result<()> {
    validate_name(&name.to_lowercase()).map_err(|err| match err {
        Error::BadRequest { .. } => Error::BadRequest {
            es_type: "invalid_alias_name_exception",
            reason: format!(
                "Invalid alias name [{name}]: {}",
                err.to_string().rsplit_once("], ").map_or("", |(_, why)| why)
            ),
        },
        other => other,
    })
}

/// What an alias definition (`{"is_write_index": true}`) says, refusing
/// the options this node does not apply.
pub fn alias_meta(alias: &str, body: &Value) -> Result<AliasMeta> {
    let obj = match body {
        Value::Null => return Ok(AliasMeta::default()),
        Value::Object(obj) => obj,
        _ => {
            return Err(Error::illegal_argument(format!(
                "the definition of alias [{alias}] must be an object"
            )));
        }
    };
    let mut meta = AliasMeta::default();
    for (key, value) in obj {
        match key.as_str() {
            "is_write_index" => {
                meta.is_write_index = Some(value.as_bool().ok_or_else(|| {
                    Error::illegal_argument(format!("[is_write_index] of alias [{alias}] must be a boolean"))
                })?);
            }
            "is_hidden" if value == &Value::Bool(false) => {}
            "filter" | "routing" | "index_routing" | "search_routing" | "is_hidden" => {
                return Err(Error::illegal_argument(format!(
                    "alias [{alias}]: [{key}] is not supported; an alias here names whole indices"
                )));
            }
            other => {
                return Err(Error::illegal_argument(format!(
                    "alias [{alias}]: unknown field [{other}]"
                )));
            }
        }
    }
    Ok(meta)
}

/// The write indices of each alias.
fn write_indices(state: &AliasState) -> BTreeMap<&str, Vec<&str>> {
    let mut writers: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (index, aliases) in state {
        for (alias, meta) in aliases {
            if meta.is_write_index == Some(true) {
                writers.entry(alias).or_default().push(index);
            }
        }
    }
    writers
}

/// Fails when a change from `before` to `after` would give an alias two
/// write indices. An alias that had two already (two coordinators'
/// changes merged in the cluster's store) fails its own writes, not
/// changes that leave it as it is.
fn check_write_indices(before: &AliasState, after: &AliasState) -> Result<()> {
    let had = write_indices(before);
    let doubled = write_indices(after)
        .into_iter()
        .find(|(alias, indices)| indices.len() > 1 && had.get(alias) != Some(indices));
    match doubled {
        Some((alias, indices)) => Err(two_write_indices(alias, &indices)),
        None => Ok(()),
    }
}

/// The error of an alias with more than one write index.
fn two_write_indices(alias: &str, indices: &[impl AsRef<str>]) -> Error {
    let names: Vec<&str> = indices.iter().map(AsRef::as_ref).collect();
    Error::illegal_argument(format!(
        "alias [{alias}] has more than one write index [{}]",
        names.join(",")
    ))
}

/// The index that writes through `alias` go to, among `holders` (the
/// indices it names, with what it says of each). Two write indices (two
/// coordinators' changes merged in the cluster's store, each checked
/// alone) fail every write rather than send it to either.
fn write_index_of(alias: &str, holders: Vec<(Arc<Index>, AliasMeta)>) -> Result<Arc<Index>> {
    let only = holders.len() == 1;
    let mut writers = Vec::new();
    let mut chosen = None;
    for (index, meta) in holders {
        match meta.is_write_index {
            Some(true) => writers.push(index),
            None if only => chosen = Some(index),
            _ => {}
        }
    }
    if writers.len() > 1 {
        let mut names: Vec<String> = writers.iter().map(|i| i.name()).collect();
        names.sort();
        return Err(two_write_indices(alias, &names));
    }
    writers.pop().or(chosen).ok_or_else(|| {
        Error::illegal_argument(format!(
            "no write index is defined for alias [{alias}]. The write index may be explicitly disabled using \
             is_write_index=false or the alias points to multiple indices without one being designated as a \
             write index"
        ))
    })
}

impl Indices {
    /// The open indices the alias `name` names, with what it says of each.
    fn alias_holders(&self, name: &str) -> Vec<(Arc<Index>, AliasMeta)> {
        self.map
            .read()
            .values()
            .filter_map(|index| {
                let meta = index.aliases().remove(name)?;
                Some((Arc::clone(index), meta))
            })
            .collect()
    }

    /// Whether an alias named `name` exists.
    pub fn is_alias(&self, name: &str) -> bool {
        self.map.read().values().any(|index| index.has_alias(name))
    }

    /// The index that writes to `name` go to: the index of that name, or
    /// the write index of the alias of that name.
    pub fn write_index(&self, name: &str) -> Result<Arc<Index>> {
        match self.get(name) {
            Err(Error::IndexNotFound(_)) => {
                let holders = self.alias_holders(name);
                if holders.is_empty() {
                    return Err(Error::IndexNotFound(name.to_string()));
                }
                write_index_of(name, holders)
            }
            found => found,
        }
    }

    /// The one index a single-document read of `name` reads: the index of
    /// that name, or the only index the alias of that name names.
    pub fn single_index(&self, name: &str) -> Result<Arc<Index>> {
        match self.get(name) {
            Err(Error::IndexNotFound(_)) => {
                let mut holders = self.alias_holders(name);
                match holders.len() {
                    0 => Err(Error::IndexNotFound(name.to_string())),
                    1 => Ok(holders.remove(0).0),
                    _ => Err(Error::illegal_argument(format!(
                        "alias [{name}] has more than one index associated with it [{}], can't execute a \
                         single index op",
                        holders
                            .iter()
                            .map(|(i, _)| i.name())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ))),
                }
            }
            found => found,
        }
    }

    /// The aliases of every open index.
    pub fn alias_state(&self) -> AliasState {
        self.map
            .read()
            .iter()
            .map(|(name, index)| (name.clone(), index.aliases()))
            .collect()
    }

    /// The aliases a new index is created with, checked against the
    /// indices and aliases there are.
    pub(super) fn check_new_index_aliases(
        &self,
        name: &str,
        aliases: &BTreeMap<String, AliasMeta>,
    ) -> Result<()> {
        if self.is_alias(name) {
            return Err(Error::BadRequest {
                es_type: "invalid_index_name_exception",
                reason: format!("Invalid index name [{name}], already exists as alias"),
            });
        }
        for alias in aliases.keys() {
            self.check_alias_name(alias)?;
            if alias == name {
                return Err(alias_is_index(alias));
            }
        }
        let before = self.alias_state();
        let mut after = before.clone();
        after.insert(name.to_string(), aliases.clone());
        check_write_indices(&before, &after)
    }

    fn check_alias_name(&self, alias: &str) -> Result<()> {
        validate_alias_name(alias)?;
        if self.exists(alias) {
            return Err(alias_is_index(alias));
        }
        Ok(())
    }

    /// Applies the actions of `POST /_aliases` in order, all checked
    /// before any is applied. Indices that gain aliases change before
    /// those that lose some, so that moving an alias never leaves it
    /// naming nothing; then the indices of `remove_index` are deleted.
    pub fn update_aliases(&self, actions: &[AliasAction]) -> Result<()> {
        let _guard = self.alias_lock.lock();
        // No index is created meanwhile, under a name an alias takes here.
        let _creating = self.create_lock.lock();
        let before = self.alias_state();
        let mut after = before.clone();
        let mut deleted = Vec::new();
        // A request none of whose actions does anything fails, naming the
        // aliases it would have removed.
        let (mut applied, mut missing) = (false, Vec::new());
        for action in actions {
            match action {
                AliasAction::Add { indices, alias, meta } => {
                    self.check_alias_name(alias)?;
                    applied = true;
                    for index in indices {
                        after
                            .get_mut(index)
                            .ok_or_else(|| Error::IndexNotFound(index.clone()))?
                            .insert(alias.clone(), meta.clone());
                    }
                }
                AliasAction::Remove {
                    indices,
                    aliases,
                    must_exist,
                } => {
                    let mut removed = false;
                    for index in indices {
                        let held = after
                            .get_mut(index)
                            .ok_or_else(|| Error::IndexNotFound(index.clone()))?;
                        let before_len = held.len();
                        held.retain(|name, _| {
                            !aliases.iter().any(|p| p == "_all" || wildcard_match(p, name))
                        });
                        removed |= held.len() != before_len;
                    }
                    if !removed && *must_exist == Some(true) {
                        return Err(Error::NotFound {
                            es_type: "resource_not_found_exception",
                            reason: format!("required alias [{}] does not exist", aliases.join(",")),
                        });
                    }
                    applied |= removed;
                    if !removed {
                        missing.extend(aliases.iter().cloned());
                    }
                }
                AliasAction::RemoveIndex { indices } => {
                    for index in indices {
                        after
                            .remove(index)
                            .ok_or_else(|| Error::IndexNotFound(index.clone()))?;
                        deleted.push(index.clone());
                    }
                    applied |= !indices.is_empty();
                }
            }
        }
        if !applied {
            return Err(aliases_missing(&missing));
        }
        check_write_indices(&before, &after)?;
        let empty = BTreeMap::new();
        let mut changed: Vec<(&String, &BTreeMap<String, AliasMeta>)> = after
            .iter()
            .filter(|(name, aliases)| before.get(*name) != Some(*aliases))
            .collect();
        // An index that becomes an alias's write index changes first, then
        // those that gain or change an alias, then those that only lose
        // some: moving an alias, or its write index, never leaves it
        // naming nothing or without a write index.
        changed.sort_by_key(|(name, aliases)| {
            let old = before.get(*name).unwrap_or(&empty);
            let new_entries: Vec<&AliasMeta> = aliases
                .iter()
                .filter(|(alias, meta)| old.get(*alias) != Some(*meta))
                .map(|(_, meta)| meta)
                .collect();
            if new_entries.iter().any(|meta| meta.is_write_index == Some(true)) {
                0
            } else if !new_entries.is_empty() {
                1
            } else {
                2
            }
        });
        for (name, aliases) in changed {
            let old = before.get(name).unwrap_or(&empty);
            self.get(name)?.set_aliases(old, aliases)?;
        }
        for name in deleted {
            self.delete(&name)?;
        }
        Ok(())
    }
}

/// The aliases of an index after a change from `old` to `new` made on a
/// copy that may be behind `current`: what the change removed goes, what it
/// added or changed is set, and the rest of `current` (another node's
/// change meanwhile) stays.
pub fn apply_alias_change(
    current: &BTreeMap<String, AliasMeta>,
    old: &BTreeMap<String, AliasMeta>,
    new: &BTreeMap<String, AliasMeta>,
) -> BTreeMap<String, AliasMeta> {
    let mut aliases = current.clone();
    aliases.retain(|name, _| new.contains_key(name) || !old.contains_key(name));
    for (name, alias) in new {
        if old.get(name) != Some(alias) {
            aliases.insert(name.clone(), alias.clone());
        }
    }
    aliases
}

/// The error for an alias named like an index.
fn alias_is_index(alias: &str) -> Error {
    Error::BadRequest {
        es_type: "invalid_alias_name_exception",
        reason: format!(
            "Invalid alias name [{alias}]: an index or data stream exists with the same name as the alias"
        ),
    }
}

/// Elasticsearch's error for aliases to remove that do not exist.
pub fn aliases_missing(aliases: &[String]) -> Error {
    Error::NotFound {
        es_type: "aliases_not_found_exception",
        reason: format!("aliases [{}] missing", aliases.join(",")),
    }
}
