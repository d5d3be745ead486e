//! Dispatch grids that respect the 65535-workgroups-per-dimension limit.

/// The most workgroups WebGPU guarantees per grid dimension.
pub const MAX_GROUPS_PER_DIM: u32 = 65_535;

/// A 1-D launch of `n` invocations folded into a 2-D grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Grid1d {
    /// Workgroups in x and y.
    pub groups: [u32; 3],
    /// Invocations in one row of the grid: the flat index is `gid.x + gid.y * grid_width`.
    pub grid_width: u32,
}

/// Folds `n` invocations at `workgroup` per group into at most 65535 groups per dimension.
/// Returns `None` if even the folded grid cannot hold `n`.
pub fn grid_1d(n: u64, workgroup: u32) -> Option<Grid1d> {
    let groups = n.div_ceil(workgroup as u64).max(1);
    let x = groups.min(MAX_GROUPS_PER_DIM as u64);
    let y = groups.div_ceil(x);
    if y > MAX_GROUPS_PER_DIM as u64 {
        return None;
    }
    Some(Grid1d {
        groups: [x as u32, y as u32, 1],
        grid_width: x as u32 * workgroup,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_grids_stay_flat() {
        let g = grid_1d(100, 64).unwrap();
        assert_eq!(g.groups, [2, 1, 1]);
        assert_eq!(g.grid_width, 128);
        assert_eq!(grid_1d(0, 64).unwrap().groups, [1, 1, 1]);
    }

    #[test]
    fn large_grids_fold_and_cover() {
        let n = 65_535u64 * 64 * 3 + 5;
        let g = grid_1d(n, 64).unwrap();
        assert_eq!(g.groups[0], 65_535);
        assert_eq!(g.groups[1], 4);
        assert!(g.groups[0] as u64 * g.groups[1] as u64 * 64 >= n);
        assert!(grid_1d(u64::MAX / 2, 64).is_none());
    }
}
