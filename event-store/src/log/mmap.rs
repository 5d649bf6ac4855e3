//! Read-only memory maps: the only `unsafe` in the workspace.
//!
//! A map is only sound while the mapped bytes do not change or shrink
//! underneath it. The store guarantees that for what it maps:
//! - sealed segments, their indexes and bloom filters are never written
//!   again: the writer moves on to a new segment before a segment is sealed,
//!   and index files are written under a temporary name and renamed into
//!   place whole;
//! - the active segment is mapped with room to grow ([`map_growing_file`]):
//!   by recovery once a torn tail is truncated, and by the writer for every
//!   new segment it starts. Readers stay below the durable length, and the
//!   writer only appends above it, so no mapped byte that is read ever
//!   changes;
//! - the data directory is locked (`LOCK`) so no other annals process
//!   writes it.
//!
//! The key log is the exception: it is written in place (a destroyed key)
//! and appended to while mapped, so its map ([`VolatileMap`]) is never
//! borrowed as a slice; bytes are copied out with volatile reads, and a
//! copy that races a write is caught by the record's checksum.
//!
//! What the store cannot prevent is another program truncating the files;
//! that is outside the contract, like deleting them.
#![allow(unsafe_code)]

use std::fs::File;
use std::io;

use bytes::Bytes;

/// A read-only map of the whole file, owned by the returned [`Bytes`] so that
/// events decoded from it can be zero-copy slices that keep it alive.
pub fn map_whole_file(file: &File) -> io::Result<Bytes> {
    if file.metadata()?.len() == 0 {
        return Ok(Bytes::new());
    }
    // SAFETY: the store never writes, truncates or replaces a file while a map
    // of it is alive (see the module comment), and the data directory lock
    // keeps other annals processes out, so the mapped bytes cannot change or
    // disappear while the returned `Bytes` (or any slice of it) exists.
    let map = unsafe { memmap2::Mmap::map(file)? };
    Ok(Bytes::from_owner(map))
}

/// A read-only map of `reserve` bytes of a file that is still being appended
/// to (the active segment). The file may be shorter than `reserve`.
///
/// Callers read only below the store's durable length, which never exceeds
/// the file's length; pages past the end of the file are never touched (that
/// would raise SIGBUS). Bytes below the durable length are never rewritten:
/// the writer only appends, and recovery truncates a torn tail before the
/// file is mapped.
pub fn map_growing_file(file: &File, reserve: u64) -> io::Result<Bytes> {
    let len = usize::try_from(reserve).map_err(io::Error::other)?;
    if len == 0 {
        return Ok(Bytes::new());
    }
    // SAFETY: as for `map_whole_file`, and additionally: the region below the
    // durable length, the only one ever read, is written exactly once before
    // it becomes durable and is never modified or truncated while mapped;
    // mapping past the end of the file is allowed by mmap(2) and harmless as
    // long as those pages are not accessed, which the durable-length bound
    // guarantees.
    let map = unsafe { memmap2::MmapOptions::new().len(len).map(file)? };
    Ok(Bytes::from_owner(map))
}

/// A read-only map of a file this process keeps writing through its file
/// handle (the key log): records appended past the mapped length, a record
/// overwritten in place. Nothing borrows its bytes; [`VolatileMap::copy`]
/// reads them with volatile loads, so a concurrent write yields a torn copy
/// for the caller's checksum to reject, never a reference to memory that
/// changes under it.
pub struct VolatileMap {
    map: Option<memmap2::Mmap>,
}

impl VolatileMap {
    pub fn map(file: &File) -> io::Result<Self> {
        if file.metadata()?.len() == 0 {
            return Ok(Self { map: None });
        }
        // SAFETY: the mapping is only read through `copy`, with volatile
        // loads inside its bounds, so changes made through the file handle
        // are data the program reads, not memory it assumed immutable. The
        // file is never truncated while mapped (the key log only grows), and
        // the directory lock keeps other annals processes from writing it.
        let map = unsafe { memmap2::Mmap::map(file)? };
        Ok(Self { map: Some(map) })
    }

    /// The file's length when it was mapped.
    pub fn mapped_len(&self) -> usize {
        self.map.as_ref().map_or(0, |m| m.len())
    }

    /// The `N` bytes at `offset`, or `None` past the mapped length.
    pub fn copy<const N: usize>(&self, offset: usize) -> Option<[u8; N]> {
        let map = self.map.as_ref()?;
        let end = offset.checked_add(N)?;
        if end > map.len() {
            return None;
        }
        // One volatile load of the whole array rather than one per byte:
        // opening reads every record of the key log this way, and byte
        // loads made that most of its start-up.
        // SAFETY: `offset + N = end <= map.len()`: inside the mapping, which
        // lives as long as `self`; `[u8; N]` has alignment 1, so any offset
        // is aligned; see `map` for why a volatile load of it is sound while
        // the file is written.
        Some(unsafe { std::ptr::read_volatile(map.as_ptr().add(offset).cast::<[u8; N]>()) })
    }
}
