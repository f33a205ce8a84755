//! RabbitMQ bus (placeholder until the adapter lands in this change).

use std::sync::Arc;

use async_trait::async_trait;

use super::{Bus, BusError, Handler, Subscription};
use crate::{events::Envelope, shutdown::Shutdown};

pub struct AmqpBus;

impl AmqpBus {
    pub async fn connect(_url: &str, _exchange: &str) -> Result<Self, BusError> {
        Err(BusError::Unavailable(
            "RabbitMQ adapter not built yet".into(),
        ))
    }
}

#[async_trait]
impl Bus for AmqpBus {
    async fn publish(&self, _envelope: &Envelope) -> Result<(), BusError> {
        Err(BusError::Unavailable("not built".into()))
    }
    async fn subscribe(
        &self,
        _subscription: Subscription,
        _handler: Arc<dyn Handler>,
        _shutdown: Shutdown,
    ) -> Result<tokio::task::JoinHandle<()>, BusError> {
        Err(BusError::Unavailable("not built".into()))
    }
    async fn pending(&self, _consumer: &str) -> Result<u64, BusError> {
        Err(BusError::Unavailable("not built".into()))
    }
    async fn dead_lettered(&self, _consumer: &str) -> Result<u64, BusError> {
        Err(BusError::Unavailable("not built".into()))
    }
    async fn ping(&self) -> Result<(), BusError> {
        Err(BusError::Unavailable("not built".into()))
    }
    fn kind(&self) -> &'static str {
        "amqp"
    }
}
