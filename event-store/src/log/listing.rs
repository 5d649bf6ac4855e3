//! Listing streams by prefix and counting them by category, for operators
//! (the admin UI's stream browser, `GET /streams`).
//!
//! No table of every stream is kept (see `state`), so a listing walks the
//! sealed segments' indexes and the active segment's: its cost grows with
//! the number of streams (about 40 bytes of mapped index read per stream
//! and segment it has events in), its memory only with the page asked
//! for. A stream is counted once, in the segment holding its version 1.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::log::segment::SealedSegment;
use crate::types::{CategoryCount, CategoryPage, StreamListing, StreamPage, StreamSummary};

/// One segment's share of a stream: what the index or the active
/// segment's table says of it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Share {
    pub first_version: u64,
    pub last_version: u64,
    pub last_position: u64,
}

impl Share {
    fn events(&self) -> u64 {
        self.last_version + 1 - self.first_version
    }
}

/// What a listing reads: the sealed segments, and the active segment's
/// streams as copied under the state's read lock.
pub(crate) struct Sources {
    pub sealed: Vec<Arc<SealedSegment>>,
    pub active: Vec<(String, Share)>,
}

impl Sources {
    /// Calls `each` with every (stream, share) of every segment, oldest
    /// segment first.
    fn walk(&self, mut each: impl FnMut(&str, Share)) -> crate::Result<()> {
        for segment in &self.sealed {
            for (name, entry) in segment.index()?.streams() {
                each(
                    name,
                    Share {
                        first_version: entry.first_version,
                        last_version: entry.last_version(),
                        last_position: segment.base + u64::from(entry.last_rel),
                    },
                );
            }
        }
        for (name, share) in &self.active {
            each(name, *share);
        }
        Ok(())
    }
}

/// The page of streams `listing` asks for.
pub(crate) fn streams(sources: &Sources, listing: &StreamListing) -> crate::Result<StreamPage> {
    let limit = listing.limit.max(1);
    // One more than the page, to know whether a next page exists.
    let keep = limit + 1;
    let mut page: BTreeMap<String, StreamSummary> = BTreeMap::new();
    let mut matching = 0;
    sources.walk(|name, share| {
        if !name.starts_with(listing.prefix.as_str()) {
            return;
        }
        if share.first_version == 1 {
            matching += 1;
        }
        if listing.after.as_deref().is_some_and(|after| name <= after) {
            return;
        }
        if let Some(kept) = page.get_mut(name) {
            kept.version = kept.version.max(share.last_version);
            kept.last_position = kept.last_position.max(share.last_position);
            return;
        }
        if page.len() == keep
            && page
                .last_key_value()
                .is_some_and(|(last, _)| name > last.as_str())
        {
            return;
        }
        page.insert(
            name.to_owned(),
            StreamSummary {
                stream_id: name.to_owned(),
                version: share.last_version,
                last_position: share.last_position,
            },
        );
        if page.len() > keep {
            page.pop_last();
        }
    })?;
    let mut streams: Vec<StreamSummary> = page.into_values().collect();
    let next_after = if streams.len() > limit {
        streams.truncate(limit);
        streams.last().map(|s| s.stream_id.clone())
    } else {
        None
    };
    Ok(StreamPage {
        streams,
        matching,
        next_after,
    })
}

/// A stream's category: its id up to the first `-` (all of it without one).
pub(crate) fn category_of(stream_id: &str) -> &str {
    stream_id.split_once('-').map_or(stream_id, |(c, _)| c)
}

/// The first `limit` categories by name, with their streams and events.
pub(crate) fn categories(sources: &Sources, limit: usize) -> crate::Result<CategoryPage> {
    let limit = limit.max(1);
    let mut counts: BTreeMap<String, CategoryCount> = BTreeMap::new();
    let mut truncated = false;
    sources.walk(|name, share| {
        let category = category_of(name);
        let count = match counts.get_mut(category) {
            Some(count) => count,
            None => {
                if counts.len() == limit {
                    truncated = true;
                    if counts
                        .last_key_value()
                        .is_some_and(|(last, _)| category > last.as_str())
                    {
                        return;
                    }
                    counts.pop_last();
                }
                counts
                    .entry(category.to_owned())
                    .or_insert_with(|| CategoryCount {
                        category: category.to_owned(),
                        streams: 0,
                        events: 0,
                    })
            }
        };
        count.streams += u64::from(share.first_version == 1);
        count.events += share.events();
    })?;
    Ok(CategoryPage {
        categories: counts.into_values().collect(),
        truncated,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources(active: &[(&str, u64, u64, u64)]) -> Sources {
        Sources {
            sealed: Vec::new(),
            active: active
                .iter()
                .map(|&(name, first, last, position)| {
                    (
                        name.to_owned(),
                        Share {
                            first_version: first,
                            last_version: last,
                            last_position: position,
                        },
                    )
                })
                .collect(),
        }
    }

    fn listing(prefix: &str, after: Option<&str>, limit: usize) -> StreamListing {
        StreamListing {
            prefix: prefix.into(),
            after: after.map(Into::into),
            limit,
        }
    }

    #[test]
    fn pages_go_through_the_matching_streams_in_id_order() {
        let s = sources(&[
            ("order-2", 1, 1, 4),
            ("customer-b", 1, 2, 3),
            ("customer-a", 1, 1, 1),
            ("customer-c", 1, 1, 5),
        ]);
        let first = streams(&s, &listing("customer-", None, 2)).unwrap();
        let ids: Vec<_> = first.streams.iter().map(|s| s.stream_id.as_str()).collect();
        assert_eq!(ids, ["customer-a", "customer-b"]);
        assert_eq!(first.matching, 3);
        assert_eq!(first.next_after.as_deref(), Some("customer-b"));
        let second = streams(&s, &listing("customer-", Some("customer-b"), 2)).unwrap();
        let ids: Vec<_> = second
            .streams
            .iter()
            .map(|s| s.stream_id.as_str())
            .collect();
        assert_eq!(ids, ["customer-c"]);
        assert_eq!(second.next_after, None);
    }

    #[test]
    fn a_stream_in_several_segments_is_listed_and_counted_once() {
        // Its first events in one segment, its later ones in another.
        let s = sources(&[("a-1", 1, 3, 3), ("a-1", 4, 6, 9), ("a-2", 1, 1, 7)]);
        let page = streams(&s, &listing("", None, 10)).unwrap();
        assert_eq!(page.matching, 2);
        assert_eq!(page.streams.len(), 2);
        assert_eq!(page.streams[0].version, 6);
        assert_eq!(page.streams[0].last_position, 9);
        let cats = categories(&s, 10).unwrap();
        assert_eq!(cats.categories.len(), 1);
        assert_eq!(cats.categories[0].streams, 2);
        assert_eq!(cats.categories[0].events, 7);
        assert!(!cats.truncated);
    }

    #[test]
    fn categories_beyond_the_limit_are_cut_by_name_and_said_so() {
        let s = sources(&[
            ("c-1", 1, 1, 1),
            ("a-1", 1, 1, 2),
            ("b-1", 1, 1, 3),
            ("plain", 1, 2, 5),
        ]);
        let cats = categories(&s, 2).unwrap();
        let names: Vec<_> = cats
            .categories
            .iter()
            .map(|c| c.category.as_str())
            .collect();
        assert_eq!(names, ["a", "b"]);
        assert!(cats.truncated);
        assert_eq!(category_of("plain"), "plain");
    }
}
