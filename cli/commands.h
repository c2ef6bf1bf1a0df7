// The `shardrun` subcommands. Each Add*Command registers one subcommand on the app; its
// callback runs the command and stores the process exit code in *exit_code.
#ifndef SHARDRUN_CLI_COMMANDS_H_
#define SHARDRUN_CLI_COMMANDS_H_

#include "CLI/CLI.hpp"

namespace shardrun {

void AddGenerateCommand(CLI::App& app, int* exit_code);  // cli/generate_command.cc
void AddInspectCommand(CLI::App& app, int* exit_code);   // cli/inspect_command.cc
void AddSynthCommand(CLI::App& app, int* exit_code);     // cli/synth_command.cc
void AddWorkerCommand(CLI::App& app, int* exit_code);    // cli/worker_command.cc
void AddDevicesCommand(CLI::App& app, int* exit_code);   // cli/devices_command.cc
void AddKeygenCommand(CLI::App& app, int* exit_code);    // cli/keygen_command.cc
void AddTokenCommand(CLI::App& app, int* exit_code);     // cli/token_command.cc
// The root command (`shardrun --shards N MODEL`) and `shardrun coordinator`.
void AddClusterCommands(CLI::App& app, int* exit_code);  // cli/cluster_command.cc

}  // namespace shardrun

#endif  // SHARDRUN_CLI_COMMANDS_H_
