//! The in-process bus: one shard, no Redis. Control events loop straight back.

use tokio::sync::broadcast;

use super::{Bus, ControlEvent};

/// How many control events a slow subscriber may fall behind before it lags.
const CAPACITY: usize = 1024;

/// A bus for a single shard: what is sent is received by this shard alone.
#[derive(Debug)]
pub struct LocalBus {
    control: broadcast::Sender<ControlEvent>,
}

impl Default for LocalBus {
    fn default() -> Self {
        Self {
            control: broadcast::channel(CAPACITY).0,
        }
    }
}

impl Bus for LocalBus {
    fn send_control(&self, event: ControlEvent) {
        // No subscriber yet means no shard state that could need the event.
        let _ = self.control.send(event);
    }

    fn subscribe_control(&self) -> broadcast::Receiver<ControlEvent> {
        self.control.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[tokio::test]
    async fn control_events_reach_every_subscriber_in_order() {
        let bus = LocalBus::default();
        let mut a = bus.subscribe_control();
        let mut b = bus.subscribe_control();
        let first = ControlEvent::Kick {
            user_id: Uuid::from_u128(1),
        };
        let second = ControlEvent::SessionRevoked {
            session_id: Uuid::from_u128(2),
        };
        bus.send_control(first.clone());
        bus.send_control(second.clone());
        for rx in [&mut a, &mut b] {
            assert_eq!(rx.recv().await.unwrap(), first);
            assert_eq!(rx.recv().await.unwrap(), second);
        }
    }
}
