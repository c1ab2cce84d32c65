//! The embedded default store, over sled 0.34. (Being written.)

use std::path::Path;

use uuid::Uuid;

use super::{Commit, Error, EventStore};
use crate::envelope::NewEvent;

pub struct SledStore {
    db: sled::Db,
}

impl SledStore {
    pub fn open(path: &Path) -> Result<Self, Error> {
        let db = sled::open(path).map_err(|e| Error::Io(e.to_string()))?;
        Ok(SledStore { db })
    }
}

impl EventStore for SledStore {
    fn append(&self, _stream: Uuid, _expected: u64, _events: &[NewEvent]) -> Result<Commit, Error> {
        let _ = &self.db;
        Err(Error::Io("not yet".into()))
    }
    fn read_raw(
        &self,
        _stream: Uuid,
        _from: u64,
        _limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, Error> {
        Ok(vec![])
    }
    fn head(&self, _stream: Uuid) -> Result<u64, Error> {
        Ok(0)
    }
    fn streams(&self) -> Result<Vec<Uuid>, Error> {
        Ok(vec![])
    }
}
