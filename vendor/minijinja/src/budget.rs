//! HANGAR PATCH: a budget on what one render may build, per thread.
//!
//! Fuel bounds how many instructions a render runs, not what one instruction builds: `s ~ s`
//! doubles a string, `"x" * n`, `indent(n)` and `format("%*d")`'s padding allocate `n` bytes,
//! `[x] * n` makes `n` items that printing or `|list` then walk, `replace` multiplies, `join`
//! repeats its separator. With a budget set ([`with_budget`]), each of these takes what it builds
//! from the budget before building it: printing a value (`Display`, `Debug`, which every
//! conversion of a value to text goes through), template text emitted, safe strings emitted,
//! string `+` and `*`, `replace`, `indent`, `join`, format padding; sequences made by `*` and `+`,
//! `slice`, and the characters of an iterated string take 8 to 24 bytes an item.
//!
//! A charge that does not fit spends the budget. Where the code can fail, it fails with
//! [`exceeded`]; where it cannot (inside `Display`), it builds nothing more, and the VM fails with
//! [`exceeded`] before its next instruction. [`with_budget`] tells the embedder whether the budget
//! was spent, so it can tell this failure from others. Without a budget nothing is charged.

use std::cell::Cell;

use crate::error::{Error, ErrorKind};

thread_local! {
    /// Bytes left; `None` when no budget is set.
    static LEFT: Cell<Option<usize>> = const { Cell::new(None) };
    /// Whether a charge did not fit since the budget was set.
    static SPENT: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` with `bytes` to build on this thread, and returns its result and whether it ran out.
/// The budget in force before (if any) is back when this returns, or unwinds.
pub fn with_budget<R>(bytes: usize, f: impl FnOnce() -> R) -> (R, bool) {
    struct Restore(Option<usize>, bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            LEFT.with(|left| left.set(self.0));
            SPENT.with(|spent| spent.set(self.1));
        }
    }
    let _restore = Restore(
        LEFT.with(|left| left.replace(Some(bytes))),
        SPENT.with(|spent| spent.replace(false)),
    );
    let rv = f();
    (rv, spent())
}

/// Takes `bytes` from the budget: false, and the budget spent, if there are not that many left.
pub(crate) fn charge(bytes: usize) -> bool {
    LEFT.with(|left| match left.get() {
        None => true,
        Some(have) if bytes <= have => {
            left.set(Some(have - bytes));
            true
        }
        Some(_) => {
            left.set(Some(0));
            SPENT.with(|spent| spent.set(true));
            false
        }
    })
}

/// [`charge`], failing with [`exceeded`].
pub(crate) fn charge_or_fail(bytes: usize) -> Result<(), Error> {
    if charge(bytes) {
        Ok(())
    } else {
        Err(exceeded())
    }
}

/// Whether the budget ran out.
pub(crate) fn spent() -> bool {
    SPENT.with(Cell::get)
}

/// The error of a render that ran out of budget.
pub(crate) fn exceeded() -> Error {
    Error::new(
        ErrorKind::InvalidOperation,
        "the template builds more text than it may",
    )
}

/// What printing a value costs: its own text (`len` bytes), and a little for the quotes and
/// separators around it, so that a sequence of empty strings costs something too.
pub(crate) fn cost_of_text(len: usize) -> usize {
    len.saturating_add(2)
}

/// What an item of a built sequence costs.
pub(crate) const ITEM: usize = 8;
