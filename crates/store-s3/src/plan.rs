//! How a landing puts an upload's stored pieces together as one object,
//! within S3's multipart rules: every part but the last at least 5 MiB,
//! at most 10 000 parts, none over 5 GiB.

/// The smallest part S3 takes, but for the last.
pub(crate) const MIN_PART: u64 = 5 * 1024 * 1024;
/// The largest part S3 takes.
pub(crate) const MAX_PART: u64 = 5 * 1024 * 1024 * 1024;
/// Parts one object may have; a margin below S3's 10 000.
const MAX_PARTS: u64 = 9_000;

/// One stored object holding the next `len` bytes of the file, from its
/// start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Piece {
    pub(crate) key: String,
    pub(crate) len: u64,
}

/// Bytes `from..to` of the object `key`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Slice {
    pub(crate) key: String,
    pub(crate) from: u64,
    pub(crate) to: u64,
}

impl Slice {
    pub(crate) fn len(&self) -> u64 {
        self.to - self.from
    }
}

/// One part of the landed object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Part {
    /// Copied inside the store: no byte passes through the receiver.
    Copy(Slice),
    /// Small pieces joined: read from the store and sent back as one part.
    Join(Vec<Slice>),
}

impl Part {
    pub(crate) fn len(&self) -> u64 {
        match self {
            Part::Copy(slice) => slice.len(),
            Part::Join(slices) => slices.iter().map(Slice::len).sum(),
        }
    }
}

/// The smallest part for a file of `total` bytes: 5 MiB, or more when
/// that many parts would be too many.
pub(crate) fn min_part(total: u64) -> u64 {
    MIN_PART.max(total.div_ceil(MAX_PARTS))
}

/// The parts of a file tiled by `pieces` (in order, each starting where
/// the one before ended): a piece of at least `min` bytes is copied in
/// the store; smaller ones are joined until a part is `min` long, taking
/// from the front of the next piece what they lack.
pub(crate) fn plan(pieces: &[Piece], min: u64) -> Vec<Part> {
    let mut parts = Vec::new();
    let mut joining: Vec<Slice> = Vec::new();
    let mut joined = 0;
    for piece in pieces.iter().filter(|p| p.len > 0) {
        let mut from = 0;
        if joined > 0 {
            let take = (min - joined).min(piece.len);
            joining.push(Slice {
                key: piece.key.clone(),
                from: 0,
                to: take,
            });
            joined += take;
            from = take;
            if joined == min {
                parts.push(Part::Join(std::mem::take(&mut joining)));
                joined = 0;
            }
        }
        let rest = piece.len - from;
        if rest == 0 {
            continue;
        }
        if rest >= min {
            // Copied in parts of at most MAX_PART, none below `min`.
            let count = rest.div_ceil(MAX_PART);
            let each = rest.div_ceil(count);
            let mut at = from;
            while at < piece.len {
                let to = (at + each).min(piece.len);
                parts.push(Part::Copy(Slice {
                    key: piece.key.clone(),
                    from: at,
                    to,
                }));
                at = to;
            }
        } else {
            joining.push(Slice {
                key: piece.key.clone(),
                from,
                to: piece.len,
            });
            joined += rest;
        }
    }
    if !joining.is_empty() {
        parts.push(Part::Join(joining));
    }
    parts
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1024 * 1024;

    fn pieces(lens: &[u64]) -> Vec<Piece> {
        lens.iter()
            .enumerate()
            .map(|(i, &len)| Piece {
                key: format!("k{i}"),
                len,
            })
            .collect()
    }

    fn slice(key: &str, from: u64, to: u64) -> Slice {
        Slice {
            key: key.into(),
            from,
            to,
        }
    }

    /// Every part but the last is at least `min`, and the parts hold the
    /// pieces' bytes in order, each once.
    fn check(pieces: &[Piece], parts: &[Part], min: u64) {
        for part in &parts[..parts.len().saturating_sub(1)] {
            assert!(part.len() >= min, "{part:?} is under {min}");
            assert!(part.len() <= MAX_PART);
        }
        let slices: Vec<&Slice> = parts
            .iter()
            .flat_map(|p| match p {
                Part::Copy(s) => std::slice::from_ref(s).iter(),
                Part::Join(v) => v.iter(),
            })
            .collect();
        let mut expected = Vec::new();
        for p in pieces.iter().filter(|p| p.len > 0) {
            expected.push((p.key.clone(), p.len));
        }
        let mut got: Vec<(String, u64)> = Vec::new();
        let mut next_from = 0;
        for s in slices {
            match got.last_mut() {
                Some((key, len)) if *key == s.key => {
                    assert_eq!(s.from, next_from, "contiguous within {key}");
                    *len += s.len();
                }
                _ => {
                    assert_eq!(s.from, 0, "{} starts at its first byte", s.key);
                    got.push((s.key.clone(), s.len()));
                }
            }
            next_from = s.to;
        }
        assert_eq!(got, expected);
    }

    #[test]
    fn large_pieces_are_copied_and_small_ones_joined_to_the_minimum() {
        let p = pieces(&[8 * MIB, 8 * MIB, 3 * MIB]);
        let parts = plan(&p, MIN_PART);
        assert_eq!(
            parts,
            vec![
                Part::Copy(slice("k0", 0, 8 * MIB)),
                Part::Copy(slice("k1", 0, 8 * MIB)),
                Part::Join(vec![slice("k2", 0, 3 * MIB)]),
            ]
        );
        let small = pieces(&[64 * 1024; 200]);
        let parts = plan(&small, MIN_PART);
        assert_eq!(parts.len(), 3, "80 + 80 + 40 pieces of 64 KiB");
        check(&small, &parts, MIN_PART);
    }

    #[test]
    fn small_pieces_before_a_large_one_borrow_its_front() {
        let p = pieces(&[MIB, 12 * MIB, MIB]);
        let parts = plan(&p, MIN_PART);
        assert_eq!(
            parts,
            vec![
                Part::Join(vec![slice("k0", 0, MIB), slice("k1", 0, 4 * MIB)]),
                Part::Copy(slice("k1", 4 * MIB, 12 * MIB)),
                Part::Join(vec![slice("k2", 0, MIB)]),
            ]
        );
        let p = pieces(&[MIB, 6 * MIB, 2 * MIB]);
        let parts = plan(&p, MIN_PART);
        check(&p, &parts, MIN_PART);
        assert_eq!(parts.len(), 2, "what is left of the 6 MiB is joined on");
    }

    #[test]
    fn mixed_and_empty_pieces_keep_every_byte_once() {
        for lens in [
            vec![],
            vec![0],
            vec![1],
            vec![5 * MIB],
            vec![5 * MIB - 1, 1, 5 * MIB + 1],
            vec![1, 0, 7 * MIB, 3, 11 * MIB, 2 * MIB, 2 * MIB, 2 * MIB],
        ] {
            let p = pieces(&lens);
            let parts = plan(&p, MIN_PART);
            check(&p, &parts, MIN_PART);
        }
    }

    #[test]
    fn huge_files_keep_under_the_part_count() {
        let total = 4 * 1024 * 1024 * MIB;
        let min = min_part(total);
        assert!(total.div_ceil(min) <= MAX_PARTS);
        let p = pieces(&[total]);
        let parts = plan(&p, min);
        assert!(parts.len() as u64 <= MAX_PARTS);
        check(&p, &parts, min);
    }
}
