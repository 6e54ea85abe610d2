//! The domain: an inventory item whose stock is event-sourced. Withdrawals compete for
//! the same stock, so concurrent commands on one item conflict naturally, and a
//! withdrawal of more than the stock is refused.
//!
//! - [`Item`]: the aggregate; [`ItemCommand`] in, [`ItemEvent`]s out (or an
//!   [`ItemRejection`]). A withdrawal that takes the stock under [`LOW_STOCK`] also
//!   emits [`ItemEvent::LowStock`], a restock that lifts it back emits
//!   [`ItemEvent::Replenished`]: one command, two events, appended together or not at
//!   all.
//! - [`StoredEvent`]: every schema ever written. Version 1 recorded restocks in dozens
//!   ([`StoredEvent::RestockedV1`]); it is upcast to [`ItemEvent::Restocked`] in units.
//! - [`StockView`]: the read model, stock per item and the items running low, kept by a
//!   [`ProjectionRunner`](crate::cqrs::ProjectionRunner).

use crate::cqrs::core::{Aggregate, CURRENT_SCHEMA, Projection, Recorded, StreamId, Upcast};
use std::collections::{BTreeMap, BTreeSet};

/// Stock under this is low.
pub const LOW_STOCK: u64 = 5;

/// A request to change an item's stock.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemCommand {
    /// Add `units` to the stock.
    Restock {
        /// Units added (at least 1).
        units: u64,
    },
    /// Take `units` out of the stock, if there are that many.
    Withdraw {
        /// Units taken (at least 1).
        units: u64,
    },
}

/// What happened to an item (the current schema, version 2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ItemEvent {
    /// Units added.
    Restocked {
        /// Units.
        units: u64,
    },
    /// Units taken.
    Withdrawn {
        /// Units.
        units: u64,
    },
    /// The stock fell under [`LOW_STOCK`].
    LowStock {
        /// Units left.
        left: u64,
    },
    /// The stock is back at [`LOW_STOCK`] or more.
    Replenished,
}

/// Why an item refused a command.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ItemRejection {
    /// Fewer units in stock than asked for.
    #[error("only {stock} units in stock, {wanted} wanted")]
    Insufficient {
        /// Units in stock.
        stock: u64,
        /// Units asked for.
        wanted: u64,
    },
    /// A command for zero units.
    #[error("a command must move at least one unit")]
    ZeroUnits,
    /// The stock would overflow.
    #[error("restocking {units} units would overflow a stock of {stock}")]
    Overflow {
        /// Units in stock.
        stock: u64,
        /// Units asked for.
        units: u64,
    },
}

/// An inventory item: the aggregate.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Item {
    /// Units in stock.
    pub stock: u64,
    /// The stock is under [`LOW_STOCK`] and was flagged.
    pub low: bool,
}

impl Aggregate for Item {
    type Command = ItemCommand;
    type Event = ItemEvent;
    type Rejection = ItemRejection;

    fn decide(&self, command: &ItemCommand) -> Result<Vec<ItemEvent>, ItemRejection> {
        match *command {
            ItemCommand::Restock { units: 0 } | ItemCommand::Withdraw { units: 0 } => {
                Err(ItemRejection::ZeroUnits)
            }
            ItemCommand::Restock { units } => {
                let after = self
                    .stock
                    .checked_add(units)
                    .ok_or(ItemRejection::Overflow {
                        stock: self.stock,
                        units,
                    })?;
                let mut events = vec![ItemEvent::Restocked { units }];
                if self.low && after >= LOW_STOCK {
                    events.push(ItemEvent::Replenished);
                }
                Ok(events)
            }
            ItemCommand::Withdraw { units } => {
                let left = self
                    .stock
                    .checked_sub(units)
                    .ok_or(ItemRejection::Insufficient {
                        stock: self.stock,
                        wanted: units,
                    })?;
                let mut events = vec![ItemEvent::Withdrawn { units }];
                if !self.low && left < LOW_STOCK {
                    events.push(ItemEvent::LowStock { left });
                }
                Ok(events)
            }
        }
    }

    fn apply(&mut self, event: &ItemEvent) {
        match *event {
            ItemEvent::Restocked { units } => self.stock = self.stock.saturating_add(units),
            ItemEvent::Withdrawn { units } => self.stock = self.stock.saturating_sub(units),
            ItemEvent::LowStock { .. } => self.low = true,
            ItemEvent::Replenished => self.low = false,
        }
    }
}

/// An item event as stored: the current schema, or version 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoredEvent {
    /// Schema 1 counted restocks in dozens.
    RestockedV1 {
        /// Dozens of units.
        dozens: u64,
    },
    /// The current schema.
    Current(ItemEvent),
}

impl From<ItemEvent> for StoredEvent {
    fn from(e: ItemEvent) -> Self {
        StoredEvent::Current(e)
    }
}

impl Upcast for StoredEvent {
    type Current = ItemEvent;
    fn schema_version(&self) -> u32 {
        match self {
            StoredEvent::RestockedV1 { .. } => 1,
            StoredEvent::Current(_) => CURRENT_SCHEMA,
        }
    }
    fn upcast(&self) -> ItemEvent {
        match *self {
            StoredEvent::RestockedV1 { dozens } => ItemEvent::Restocked {
                units: dozens.saturating_mul(12),
            },
            StoredEvent::Current(e) => e,
        }
    }
}

impl Upcast for ItemEvent {
    type Current = ItemEvent;
    fn schema_version(&self) -> u32 {
        CURRENT_SCHEMA
    }
    fn upcast(&self) -> ItemEvent {
        *self
    }
}

/// The read model: stock per item and the items running low, as of a log position.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StockView {
    /// Position of the last event applied.
    pub position: u64,
    /// Units in stock per item.
    pub stock: BTreeMap<StreamId, u64>,
    /// Items flagged low.
    pub low: BTreeSet<StreamId>,
    /// Events applied.
    pub events: u64,
}

impl Projection for StockView {
    type Event = ItemEvent;

    fn position(&self) -> u64 {
        self.position
    }

    fn apply(&mut self, r: &Recorded<ItemEvent>) {
        let stock = self.stock.entry(r.stream).or_insert(0);
        match r.event {
            ItemEvent::Restocked { units } => *stock = stock.saturating_add(units),
            ItemEvent::Withdrawn { units } => *stock = stock.saturating_sub(units),
            ItemEvent::LowStock { .. } => {
                self.low.insert(r.stream);
            }
            ItemEvent::Replenished => {
                self.low.remove(&r.stream);
            }
        }
        self.events += 1;
        self.position = r.position;
    }
}

impl StockView {
    /// The view of every event of `log` (in log order): what a read model must equal
    /// once caught up.
    pub fn fold<'a>(log: impl IntoIterator<Item = &'a Recorded<ItemEvent>>) -> StockView {
        let mut v = StockView::default();
        for r in log {
            v.apply(r);
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_withdrawal_emits_nothing_and_low_stock_comes_with_it() {
        let item = Item {
            stock: 6,
            low: false,
        };
        assert_eq!(
            item.decide(&ItemCommand::Withdraw { units: 7 }),
            Err(ItemRejection::Insufficient {
                stock: 6,
                wanted: 7
            })
        );
        let events = item.decide(&ItemCommand::Withdraw { units: 3 }).unwrap();
        assert_eq!(
            events,
            vec![
                ItemEvent::Withdrawn { units: 3 },
                ItemEvent::LowStock { left: 3 }
            ]
        );
        let after = item.fold(events.iter());
        assert_eq!(
            after,
            Item {
                stock: 3,
                low: true
            }
        );
        assert_eq!(
            after.decide(&ItemCommand::Restock { units: 2 }).unwrap(),
            vec![ItemEvent::Restocked { units: 2 }, ItemEvent::Replenished]
        );
        assert_eq!(
            after.decide(&ItemCommand::Restock { units: 0 }),
            Err(ItemRejection::ZeroUnits)
        );
    }

    #[test]
    fn version_1_restocks_upcast_to_units() {
        let old = StoredEvent::RestockedV1 { dozens: 2 };
        assert_eq!(old.schema_version(), 1);
        assert_eq!(old.upcast(), ItemEvent::Restocked { units: 24 });
        let new = StoredEvent::from(ItemEvent::Replenished);
        assert_eq!(new.schema_version(), CURRENT_SCHEMA);
    }
}
