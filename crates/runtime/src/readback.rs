//! Mapping a staging buffer back to the host.

use crate::device::Device;
use crate::error::RunError;

/// Waits for the GPU and returns the whole contents of a `MAP_READ` buffer.
pub fn map_read(device: &Device, buffer: &wgpu::Buffer) -> Result<Vec<u8>, RunError> {
    let slice = buffer.slice(..);
    let (tx, rx) = std::sync::mpsc::channel();
    slice.map_async(wgpu::MapMode::Read, move |r| {
        // The receiver lives until recv() below returns; a failed send cannot happen.
        let _ = tx.send(r);
    });
    device
        .wgpu_device()
        .poll(wgpu::PollType::wait_indefinitely())
        .map_err(|e| RunError::Map(e.to_string()))?;
    rx.recv()
        .map_err(|e| RunError::Map(e.to_string()))?
        .map_err(|e| RunError::Map(e.to_string()))?;
    let data = slice
        .get_mapped_range()
        .map_err(|e| RunError::Map(e.to_string()))?
        .to_vec();
    buffer.unmap();
    Ok(data)
}

/// Maps a `MAP_READ` buffer and returns the given `(offset, bytes)` ranges of it.
pub fn map_read_range(
    device: &Device,
    buffer: &wgpu::Buffer,
    ranges: impl Iterator<Item = (u64, u64)>,
) -> Result<Vec<Vec<u8>>, RunError> {
    let data = map_read(device, buffer)?;
    Ok(ranges
        .map(|(at, n)| data[at as usize..(at + n) as usize].to_vec())
        .collect())
}
