//! Segments and force merges: what `_cat/segments` lists of a shard, and
//! which of its segments `_forcemerge` merges.
//!
//! A refresh commits the shard, so each refresh adds segments (one per
//! indexing thread that took documents), and tantivy's merge policy merges
//! them in the background. A force merge merges on request, as
//! Elasticsearch's does: down to a number of segments, or the segments
//! that hold many deleted documents, or what the merge policy asks for now.

use serde::{Deserialize, Serialize};
use tantivy::index::SegmentId;

use crate::error::{Error, Result};

/// A searchable segment of a shard.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentStats {
    /// tantivy's segment id (its short form).
    pub id: String,
    /// Live documents.
    pub docs: u64,
    /// Deleted documents the segment still holds.
    pub deleted: u64,
    /// Bytes of its files.
    pub bytes: u64,
}

/// What a force merge merges.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ForceMerge {
    /// What the merge policy asks for now (no `max_num_segments`).
    Policy,
    /// Down to at most this many segments; once few enough, the segments
    /// holding deleted documents are rewritten without them
    /// (`max_num_segments`).
    MaxSegments(usize),
    /// The segments whose deleted documents are more than a tenth of them
    /// (`only_expunge_deletes`).
    ExpungeDeletes,
}

impl ForceMerge {
    /// From `_forcemerge`'s parameters, refused as Elasticsearch refuses them.
    pub fn from_params(max_num_segments: Option<&str>, expunge: bool) -> Result<ForceMerge> {
        let max = match max_num_segments {
            None | Some("-1") => None,
            Some(v) => match v.parse::<usize>() {
                Ok(n) if n > 0 => Some(n),
                _ => {
                    return Err(Error::illegal_argument(format!(
                        "max_num_segments must be a positive number, got [{v}]"
                    )));
                }
            },
        };
        match (max, expunge) {
            (Some(_), true) => Err(Error::BadRequest {
                es_type: "action_request_validation_exception",
                reason: "Validation Failed: 1: cannot set only_expunge_deletes and max_num_segments at the same time;"
                    .into(),
            }),
            (Some(n), false) => Ok(ForceMerge::MaxSegments(n)),
            (None, true) => Ok(ForceMerge::ExpungeDeletes),
            (None, false) => Ok(ForceMerge::Policy),
        }
    }
}

/// A segment as a merge plan sees it.
#[derive(Debug, Clone, Copy)]
pub struct Candidate {
    /// The segment.
    pub id: SegmentId,
    /// Documents it holds, deleted or not.
    pub max_doc: u32,
    /// Deleted documents among them.
    pub deleted: u32,
}

impl Candidate {
    fn mostly_deleted(&self) -> bool {
        // Elasticsearch's `index.merge.policy.expunge_deletes_allowed`: 10%.
        u64::from(self.deleted) * 10 > u64::from(self.max_doc)
    }
}

/// The merges that bring `segments` to what `how` asks (each group is
/// merged into one segment); `None` for [`ForceMerge::Policy`], whose
/// merges the merge policy plans.
pub fn plan(how: ForceMerge, segments: &[Candidate]) -> Option<Vec<Vec<SegmentId>>> {
    Some(match how {
        ForceMerge::Policy => return None,
        ForceMerge::ExpungeDeletes => {
            let heavy: Vec<SegmentId> = segments
                .iter()
                .filter(|s| s.mostly_deleted())
                .map(|s| s.id)
                .collect();
            if heavy.is_empty() { Vec::new() } else { vec![heavy] }
        }
        ForceMerge::MaxSegments(max) if segments.len() > max => {
            // The smallest segments merge into one, so that `max` are left.
            let mut by_size: Vec<&Candidate> = segments.iter().collect();
            by_size.sort_by_key(|s| s.max_doc - s.deleted);
            vec![by_size[..segments.len() - max + 1].iter().map(|s| s.id).collect()]
        }
        // Few enough: each segment holding deleted documents is rewritten
        // without them.
        ForceMerge::MaxSegments(_) => segments
            .iter()
            .filter(|s| s.deleted > 0)
            .map(|s| vec![s.id])
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn segment(max_doc: u32, deleted: u32) -> Candidate {
        Candidate {
            id: SegmentId::generate_random(),
            max_doc,
            deleted,
        }
    }

    #[test]
    fn max_segments_merges_the_smallest() {
        let s = [segment(100, 0), segment(10, 0), segment(50, 40), segment(30, 0)];
        // Live sizes 100, 10, 10, 30: down to two, the three smallest merge.
        let groups = plan(ForceMerge::MaxSegments(2), &s);
        assert_eq!(groups, Some(vec![vec![s[1].id, s[2].id, s[3].id]]));
        let one = plan(ForceMerge::MaxSegments(1), &s).unwrap_or_default();
        assert_eq!(one.len(), 1);
        assert_eq!(one[0].len(), 4);
        // Already few enough: only the segment with deletions is rewritten.
        assert_eq!(plan(ForceMerge::MaxSegments(4), &s), Some(vec![vec![s[2].id]]));
        assert_eq!(plan(ForceMerge::MaxSegments(4), &s[..2]), Some(vec![]));
    }

    #[test]
    fn expunge_takes_segments_over_a_tenth_deleted() {
        let s = [segment(100, 10), segment(100, 11), segment(10, 9), segment(5, 0)];
        assert_eq!(
            plan(ForceMerge::ExpungeDeletes, &s),
            Some(vec![vec![s[1].id, s[2].id]])
        );
        assert_eq!(plan(ForceMerge::ExpungeDeletes, &s[..1]), Some(vec![]));
        assert_eq!(plan(ForceMerge::Policy, &s), None);
    }

    #[test]
    fn parameters_are_checked() {
        assert_eq!(
            ForceMerge::from_params(None, false).ok(),
            Some(ForceMerge::Policy)
        );
        assert_eq!(
            ForceMerge::from_params(Some("1"), false).ok(),
            Some(ForceMerge::MaxSegments(1))
        );
        assert_eq!(
            ForceMerge::from_params(None, true).ok(),
            Some(ForceMerge::ExpungeDeletes)
        );
        assert!(matches!(
            ForceMerge::from_params(Some("1"), true),
            Err(Error::BadRequest {
                es_type: "action_request_validation_exception",
                ..
            })
        ));
        for bad in ["0", "x", "-2"] {
            assert!(ForceMerge::from_params(Some(bad), false).is_err(), "{bad}");
        }
    }
}
