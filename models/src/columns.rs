//! [`ColumnMap`]: a sparse model's weights by column, in one open-addressed
//! table (linear probing) whose cells hold the column and its value side by
//! side, so that a look-up costs one cache line, not the two of a map with
//! its control bytes apart from its entries. Columns are hashes already
//! (hashed text and category columns), so one multiply places them. A
//! cell's key is the `u32` column itself, so that a 12-byte value makes a
//! 16-byte cell, four to a cache line.

/// No column: an empty cell's key. Column `u32::MAX` itself is kept
/// beside the cells (`top`).
const EMPTY: u32 = u32::MAX;

/// The fewest cells a table that holds anything has.
const MIN_CELLS: usize = 16;

#[derive(Debug, Clone, Copy)]
struct Cell<V> {
    key: u32,
    value: V,
}

/// A map from `u32` columns to `V`, with the look-ups a sparse model makes.
/// Equal when it holds the same columns with equal values, whatever order
/// they came in; printed as its columns and values (not its empty cells).
#[derive(Clone)]
pub struct ColumnMap<V> {
    cells: Vec<Cell<V>>,
    /// Cells in use.
    len: usize,
    /// 64 - log2(cells): the multiply's top bits are a column's first cell.
    shift: u32,
    /// The value of column `u32::MAX`, the one column that is not in a
    /// cell (its number marks an empty one).
    top: Option<V>,
}

impl<V> Default for ColumnMap<V> {
    fn default() -> Self {
        ColumnMap {
            cells: Vec::new(),
            len: 0,
            shift: 64,
            top: None,
        }
    }
}

impl<V: Copy + Default> ColumnMap<V> {
    /// Columns held.
    pub fn len(&self) -> usize {
        self.len + usize::from(self.top.is_some())
    }

    #[inline]
    fn first_cell(&self, c: u32) -> usize {
        ((c as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> self.shift) as usize
    }

    /// The cell of `c`, or the empty cell where it would go.
    #[inline(always)]
    fn find(&self, c: u32) -> usize {
        let mask = self.cells.len() - 1;
        let mut i = self.first_cell(c);
        loop {
            let key = self.cells[i].key;
            if key == c || key == EMPTY {
                return i;
            }
            i = (i + 1) & mask;
        }
    }

    /// The value of column `c`, if it has one.
    #[inline]
    pub fn get(&self, c: u32) -> Option<&V> {
        if c == EMPTY {
            return self.top.as_ref();
        }
        if self.cells.is_empty() {
            return None;
        }
        let cell = &self.cells[self.find(c)];
        (cell.key != EMPTY).then_some(&cell.value)
    }

    /// The value of column `c`, made (the default) if it has none.
    /// Always inlined: called for every column of every reading learned,
    /// and, called, it spends as many instructions saving and restoring
    /// registers as finding the cell.
    #[inline(always)]
    pub fn get_or_default(&mut self, c: u32) -> &mut V {
        if c == EMPTY {
            return self.top.get_or_insert_with(V::default);
        }
        // at most three quarters full, so that probes stay short
        if 4 * (self.len + 1) > 3 * self.cells.len() {
            self.grow();
        }
        let i = self.find(c);
        let cell = &mut self.cells[i];
        if cell.key == EMPTY {
            cell.key = c;
            self.len += 1;
        }
        &mut cell.value
    }

    /// Sets column `c`'s value.
    pub fn insert(&mut self, c: u32, value: V) {
        *self.get_or_default(c) = value;
    }

    #[cold]
    fn grow(&mut self) {
        let n = (self.cells.len() * 2).max(MIN_CELLS);
        let old = std::mem::replace(
            &mut self.cells,
            vec![
                Cell {
                    key: EMPTY,
                    value: V::default(),
                };
                n
            ],
        );
        self.shift = 64 - n.trailing_zeros();
        for cell in old.into_iter().filter(|c| c.key != EMPTY) {
            let i = self.find(cell.key);
            self.cells[i] = cell;
        }
    }

    /// The columns and their values, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, &V)> + '_ {
        self.cells
            .iter()
            .filter(|c| c.key != EMPTY)
            .map(|c| (c.key, &c.value))
            .chain(self.top.iter().map(|v| (EMPTY, v)))
    }
}

impl<V: Copy + Default + std::fmt::Debug> std::fmt::Debug for ColumnMap<V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl<V: Copy + Default> FromIterator<(u32, V)> for ColumnMap<V> {
    fn from_iter<I: IntoIterator<Item = (u32, V)>>(iter: I) -> Self {
        let mut map = ColumnMap::default();
        for (c, v) in iter {
            map.insert(c, v);
        }
        map
    }
}

impl<V: Copy + Default + PartialEq> PartialEq for ColumnMap<V> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().all(|(c, v)| other.get(c) == Some(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn agrees_with_a_hash_map_through_growth() {
        let mut ours: ColumnMap<f64> = ColumnMap::default();
        let mut theirs: HashMap<u32, f64> = HashMap::new();
        assert_eq!(ours.get(7), None, "empty, no cells yet");
        // columns that collide in their first cell (multiples of a power
        // of two), the extremes, and a spread
        let columns: Vec<u32> = (0..3000u32)
            .map(|i| match i % 3 {
                0 => i << 20,
                1 => i.wrapping_mul(2_654_435_761),
                _ => u32::MAX - i + 2,
            })
            .collect();
        assert!(
            columns.contains(&u32::MAX),
            "the column kept beside the cells"
        );
        for (n, &c) in columns.iter().enumerate() {
            *ours.get_or_default(c) += n as f64;
            *theirs.entry(c).or_default() += n as f64;
            if n % 500 == 0 {
                ours.insert(c, -1.0);
                theirs.insert(c, -1.0);
            }
        }
        assert_eq!(ours.len(), theirs.len());
        for (&c, v) in &theirs {
            assert_eq!(ours.get(c), Some(v), "column {c}");
        }
        assert_eq!(ours.get(12_345), None);
        let mut listed: Vec<(u32, f64)> = ours.iter().map(|(c, v)| (c, *v)).collect();
        let mut expected: Vec<(u32, f64)> = theirs.into_iter().collect();
        listed.sort_by_key(|x| x.0);
        expected.sort_by_key(|x| x.0);
        assert_eq!(listed, expected);
    }

    #[test]
    fn equal_whatever_the_order_columns_came_in() {
        let a: ColumnMap<f64> = (0..100u32).map(|c| (c * 7919, c as f64)).collect();
        let b: ColumnMap<f64> = (0..100u32).rev().map(|c| (c * 7919, c as f64)).collect();
        assert_eq!(a, b);
        let mut c = b.clone();
        c.insert(7919, 0.5);
        assert_ne!(a, c, "one value differs");
        let mut d = b.clone();
        d.insert(1, 0.0);
        assert_ne!(a, d, "one column more");
        assert_eq!(ColumnMap::<f64>::default(), ColumnMap::default());
        let one: ColumnMap<f64> = [(5, 1.5)].into_iter().collect();
        assert_eq!(format!("{one:?}"), "{5: 1.5}", "columns, not cells");
    }
}
