//! GPU utilisation through NVML, where a GPU exists. `libnvidia-ml.so.1` is loaded at run time: on
//! a machine without it (no NVIDIA driver) the GPU families are not registered at all — absent,
//! never a misleading zero.

use std::time::Duration;

use nvml_wrapper::Nvml;
use prometheus::{IntGaugeVec, Opts, Registry};

/// GPU metric families, updated in the background.
#[derive(Debug)]
pub struct GpuMetrics {
    utilization: IntGaugeVec,
    memory_used: IntGaugeVec,
    memory_total: IntGaugeVec,
}

impl GpuMetrics {
    /// Registers the GPU families in `registry` and starts sampling every `every`, if NVML
    /// answers; `None` (and nothing registered) where there is no GPU driver.
    pub fn start(registry: &Registry, every: Duration) -> Option<()> {
        let nvml = match Nvml::init() {
            Ok(nvml) => nvml,
            Err(e) => {
                tracing::info!(reason = %e, "no NVML: GPU metrics are not exported on this node");
                return None;
            }
        };
        let count = nvml.device_count().ok()?;
        let m = Self {
            utilization: IntGaugeVec::new(
                Opts::new(
                    "r1_center_gpu_utilization_percent",
                    "GPU busy time over the last sample, percent.",
                ),
                &["gpu"],
            )
            .ok()?,
            memory_used: IntGaugeVec::new(
                Opts::new("r1_center_gpu_memory_used_bytes", "GPU memory in use."),
                &["gpu"],
            )
            .ok()?,
            memory_total: IntGaugeVec::new(Opts::new("r1_center_gpu_memory_total_bytes", "GPU memory."), &["gpu"])
                .ok()?,
        };
        registry.register(Box::new(m.utilization.clone())).ok()?;
        registry.register(Box::new(m.memory_used.clone())).ok()?;
        registry.register(Box::new(m.memory_total.clone())).ok()?;
        tracing::info!(gpus = count, "NVML: exporting GPU utilisation");
        std::thread::Builder::new()
            .name("nvml".into())
            .spawn(move || {
                loop {
                    m.sample(&nvml, count);
                    std::thread::sleep(every);
                }
            })
            .ok()?;
        Some(())
    }

    fn sample(&self, nvml: &Nvml, count: u32) {
        for i in 0..count {
            let Ok(device) = nvml.device_by_index(i) else {
                continue;
            };
            let label = i.to_string();
            if let Ok(u) = device.utilization_rates() {
                self.utilization.with_label_values(&[&label]).set(i64::from(u.gpu));
            }
            if let Ok(mem) = device.memory_info() {
                self.memory_used
                    .with_label_values(&[&label])
                    .set(i64::try_from(mem.used).unwrap_or(i64::MAX));
                self.memory_total
                    .with_label_values(&[&label])
                    .set(i64::try_from(mem.total).unwrap_or(i64::MAX));
            }
        }
    }
}
