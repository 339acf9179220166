//! Which node takes writes, from what the servers say about themselves.
//!
//! The configured roles are only a starting guess: pgsplit follows
//! `pg_is_in_recovery()`, as it must beside Patroni or CloudNativePG. When
//! two reachable nodes both claim to be primary, neither gets writes until
//! one of them steps down, unless pgsplit promoted one of them itself.

use crate::config::Role;

/// The outcome of one round of role discovery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PrimaryDecision {
    /// The node that takes writes; `None` when none can be trusted.
    pub primary: Option<usize>,
    /// Nodes competing for the primary role (split brain), if any.
    pub competing: Vec<usize>,
}

/// Decides the primary. `reported[i]` is node `i`'s role this round, `None`
/// when it did not answer; `previous` is the primary so far; `promoted` a
/// node pgsplit promoted itself.
pub fn resolve_primary(
    previous: Option<usize>,
    reported: &[Option<Role>],
    promoted: Option<usize>,
) -> PrimaryDecision {
    let claimants: Vec<usize> = reported
        .iter()
        .enumerate()
        .filter(|(_, role)| **role == Some(Role::Primary))
        .map(|(index, _)| index)
        .collect();
    let decided = |primary| PrimaryDecision {
        primary,
        competing: Vec::new(),
    };
    match claimants.as_slice() {
        [only] => decided(Some(*only)),
        [] => match previous {
            // The primary did not answer: it stays the primary (writes fail
            // over to nobody by themselves) until another node takes over.
            Some(p) if reported.get(p).is_some_and(Option::is_none) => decided(Some(p)),
            // It answered as a replica: it was demoted, and nobody took over yet.
            _ => decided(None),
        },
        many => match promoted {
            Some(p) if many.contains(&p) => decided(Some(p)),
            _ => PrimaryDecision {
                primary: None,
                competing: many.to_vec(),
            },
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: Option<Role> = Some(Role::Primary);
    const R: Option<Role> = Some(Role::Replica);

    #[test]
    fn follows_the_node_that_reports_primary() {
        assert_eq!(resolve_primary(Some(0), &[P, R, R], None).primary, Some(0));
        // A replica was promoted by hand and the old primary is gone.
        assert_eq!(
            resolve_primary(Some(0), &[None, P, R], None).primary,
            Some(1)
        );
        // The old primary came back as a replica.
        assert_eq!(resolve_primary(Some(1), &[R, P, R], None).primary, Some(1));
    }

    #[test]
    fn an_unreachable_primary_stays_primary_until_replaced() {
        assert_eq!(
            resolve_primary(Some(0), &[None, R, R], None).primary,
            Some(0)
        );
        assert_eq!(resolve_primary(Some(0), &[R, R, R], None).primary, None);
    }

    #[test]
    fn two_primaries_mean_no_writes_unless_pgsplit_promoted_one() {
        let split = resolve_primary(Some(0), &[P, P, R], None);
        assert_eq!(split.primary, None);
        assert_eq!(split.competing, vec![0, 1]);
        let promoted = resolve_primary(Some(0), &[P, P, R], Some(1));
        assert_eq!(promoted.primary, Some(1));
        assert!(promoted.competing.is_empty());
    }
}
