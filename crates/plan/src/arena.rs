//! Arena placement: give every materialized tensor a byte offset such that no two tensors
//! live at the same time overlap, keeping the arena close to the liveness lower bound.

/// A tensor to place: its size and the inclusive range of steps during which it is live.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interval {
    pub bytes: u64,
    pub birth: usize,
    pub death: usize,
}

impl Interval {
    fn overlaps_in_time(&self, o: &Interval) -> bool {
        self.birth <= o.death && o.birth <= self.death
    }
}

/// The peak, over steps, of the bytes live at once: no placement can use less.
pub fn lower_bound(tensors: &[Interval]) -> u64 {
    peak_step(tensors).0
}

/// The peak of [`lower_bound`] and the first step at which it is reached.
pub fn peak_step(tensors: &[Interval]) -> (u64, usize) {
    let end = tensors.iter().map(|t| t.death + 1).max().unwrap_or(0);
    let mut delta = vec![0i128; end + 1];
    for t in tensors {
        delta[t.birth] += t.bytes as i128;
        delta[t.death + 1] -= t.bytes as i128;
    }
    let (mut live, mut peak, mut at) = (0i128, 0i128, 0usize);
    for (step, d) in delta.into_iter().enumerate() {
        live += d;
        if live > peak {
            peak = live;
            at = step;
        }
    }
    (peak as u64, at)
}

/// Places tensors largest first, each at the lowest `align`-aligned offset where it overlaps
/// no already placed tensor that is live at the same time. Returns offsets (in input order)
/// and the arena size. Deterministic: ties are broken by input order.
pub fn place(tensors: &[Interval], align: u64) -> (Vec<u64>, u64) {
    let mut order: Vec<usize> = (0..tensors.len()).collect();
    order.sort_by(|&a, &b| {
        let (ta, tb) = (&tensors[a], &tensors[b]);
        tb.bytes
            .cmp(&ta.bytes)
            .then((tb.death - tb.birth).cmp(&(ta.death - ta.birth)))
            .then(a.cmp(&b))
    });
    let mut offsets = vec![0u64; tensors.len()];
    let mut placed: Vec<usize> = Vec::with_capacity(tensors.len());
    let mut arena = 0u64;
    for &i in &order {
        let t = &tensors[i];
        let mut busy: Vec<(u64, u64)> = placed
            .iter()
            .filter(|&&j| tensors[j].overlaps_in_time(t) && tensors[j].bytes > 0)
            .map(|&j| (offsets[j], offsets[j] + tensors[j].bytes))
            .collect();
        busy.sort_unstable();
        let mut at = 0u64;
        for (start, end) in busy {
            if at + t.bytes <= start {
                break;
            }
            at = at.max(end.next_multiple_of(align));
        }
        offsets[i] = at;
        arena = arena.max(at + t.bytes);
        placed.push(i);
    }
    (offsets, arena.next_multiple_of(align))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iv(bytes: u64, birth: usize, death: usize) -> Interval {
        Interval {
            bytes,
            birth,
            death,
        }
    }

    #[test]
    fn disjoint_lifetimes_share_memory() {
        let t = [iv(100, 0, 1), iv(100, 2, 3), iv(100, 4, 5)];
        let (off, size) = place(&t, 16);
        assert_eq!(off, [0, 0, 0]);
        assert_eq!(size, 112);
        assert_eq!(lower_bound(&t), 100);
    }

    #[test]
    fn overlapping_lifetimes_do_not_overlap_in_memory() {
        let t = [iv(64, 0, 2), iv(32, 1, 3), iv(48, 2, 2)];
        let (off, size) = place(&t, 16);
        for i in 0..3 {
            for j in 0..i {
                if t[i].overlaps_in_time(&t[j]) {
                    let (a, b) = (off[i]..off[i] + t[i].bytes, off[j]..off[j] + t[j].bytes);
                    assert!(a.end <= b.start || b.end <= a.start, "{i} {j} {off:?}");
                }
            }
        }
        assert_eq!(lower_bound(&t), 144);
        assert_eq!(size, 144);
    }
}
