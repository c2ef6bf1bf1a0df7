// `--links` (and its old spelling `--no-local-link`), shared by the cluster commands and
// `shardrun worker`: which links (proto/link.h) carry messages beside the ZeroMQ sockets.
#ifndef SHARDRUN_CLI_LINK_OPTIONS_H_
#define SHARDRUN_CLI_LINK_OPTIONS_H_

#include <string>

#include "CLI/CLI.hpp"

namespace shardrun {

// Registers the options on `cmd`; `*links` ends up "auto", "tcp" or "none" (ParseLinkMode).
void AddLinkOptions(CLI::App* cmd, std::string* links);

}  // namespace shardrun

#endif  // SHARDRUN_CLI_LINK_OPTIONS_H_
