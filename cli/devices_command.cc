// `shardrun devices`: the Vulkan devices the loader sees, with the limits the Vulkan backend
// works within (the index is what --vk-device takes).
#include <cstdio>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "cli/commands.h"
#include "kernels/backend_factory.h"
#include "partitioner/byte_size.h"
#include "spdlog/spdlog.h"

namespace shardrun {
namespace {

void PrintDevice(const VulkanDeviceInfo& d) {
  std::vector<std::string> heaps;
  for (size_t h = 0; h < d.heap_bytes.size(); ++h) {
    heaps.push_back(absl::StrCat(FormatBytes(static_cast<int64_t>(d.heap_bytes[h])),
                                 d.heap_device_local[h] ? " device-local" : " host"));
  }
  std::printf("%d: %s\n", d.index, d.name.c_str());
  std::printf("   type %s, Vulkan %s, vendor 0x%04x device 0x%04x%s\n", d.type.c_str(),
              d.api_version.c_str(), d.vendor_id, d.device_id,
              d.has_compute_queue ? "" : ", NO compute queue");
  std::printf("   driver %s\n", d.driver.c_str());
  std::printf("   memory heaps: %s\n", absl::StrJoin(heaps, ", ").c_str());
  std::printf("   maxStorageBufferRange %s (%llu bytes)\n",
              FormatBytes(static_cast<int64_t>(d.max_storage_buffer_range)).c_str(),
              static_cast<unsigned long long>(d.max_storage_buffer_range));
  std::printf("   max workgroup size %u x %u x %u (%u invocations), count %u x %u x %u\n",
              d.max_workgroup_size[0], d.max_workgroup_size[1], d.max_workgroup_size[2],
              d.max_workgroup_invocations, d.max_workgroup_count[0], d.max_workgroup_count[1],
              d.max_workgroup_count[2]);
  if (d.subgroup_size > 0) {
    std::printf("   subgroup size %u\n", d.subgroup_size);
  } else {
    std::printf("   subgroup size not reported (Vulkan 1.0 device)\n");
  }
}

}  // namespace

void AddDevicesCommand(CLI::App& app, int* exit_code) {
  CLI::App* cmd = app.add_subcommand("devices", "List the Vulkan devices this machine offers");
  cmd->callback([exit_code] {
    auto devices = ListGpuDevices();
    if (!devices.ok()) {
      spdlog::error("{}", std::string(devices.status().message()));
      *exit_code = 1;
      return;
    }
    if (devices->empty()) {
      std::printf("no Vulkan device (the loader found no driver)\n");
      return;
    }
    for (const VulkanDeviceInfo& d : *devices) PrintDevice(d);
  });
}

}  // namespace shardrun
