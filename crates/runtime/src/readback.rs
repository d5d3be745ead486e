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
        .wait_idle()
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

/// Waits for the GPU, then maps only the part of a `MAP_READ` buffer that covers the given
/// `(offset, bytes)` ranges (offsets multiples of 4) and returns each range. Mapping the whole
/// pooled buffer would copy every output of the graph, e.g. a whole KV cache, on each run.
pub fn map_read_range(
    device: &Device,
    buffer: &wgpu::Buffer,
    ranges: impl Iterator<Item = (u64, u64)>,
) -> Result<Vec<Vec<u8>>, RunError> {
    let ranges: Vec<(u64, u64)> = ranges.collect();
    let wanted: Vec<&(u64, u64)> = ranges.iter().filter(|r| r.1 > 0).collect();
    let wait = || device.wait_idle().map_err(|e| RunError::Map(e.to_string()));
    if wanted.is_empty() {
        wait()?;
        return Ok(ranges.iter().map(|_| Vec::new()).collect());
    }
    let start =
        wanted.iter().map(|r| r.0).min().unwrap_or(0) / wgpu::MAP_ALIGNMENT * wgpu::MAP_ALIGNMENT;
    let end = wanted
        .iter()
        .map(|r| r.0 + r.1)
        .max()
        .unwrap_or(start)
        .next_multiple_of(4)
        .min(buffer.size());
    let slice = buffer.slice(start..end);
    let (tx, rx) = std::sync::mpsc::channel();
    slice.map_async(wgpu::MapMode::Read, move |r| {
        // The receiver lives until recv() below returns.
        let _ = tx.send(r);
    });
    wait()?;
    rx.recv()
        .map_err(|e| RunError::Map(e.to_string()))?
        .map_err(|e| RunError::Map(e.to_string()))?;
    let out = {
        let view = slice
            .get_mapped_range()
            .map_err(|e| RunError::Map(e.to_string()))?;
        ranges
            .iter()
            .map(|&(at, n)| {
                if n == 0 {
                    Vec::new()
                } else {
                    let a = (at - start) as usize;
                    view[a..a + n as usize].to_vec()
                }
            })
            .collect()
    };
    buffer.unmap();
    Ok(out)
}
