// Named crash points: the places where the engine's writes are between two
// steps, so that the crash tests (tests/engine/crash_test.cc, CrashPointTest)
// can kill a process exactly there instead of at a random instant.
//
// A process whose environment has CAIRN_CRASH_POINT=<name>[:<skip>] kills
// itself with SIGKILL the (skip+1)-th time it reaches the point <name>. In
// any other process a point costs a load and a compare of a flag read once.
// The names, and what each one interrupts:
//
//   commit.before_write     a group commit, its batch built, before the RocksDB write
//   commit.after_write      after the write, before the seq is published and acknowledged
//   exclusive.before_ingest a spilled commit's files written, before they are ingested
//   exclusive.after_ingest  after they are ingested, before the spill is cleaned up
//   session.after_commit    a session applied, before its staged records are dropped
//   checkpoint.before_write a checkpoint decided, before it is written
//   checkpoint.after_write  after it is written, before the caller hears of it
//   retention.after_horizon the new horizon written, before it is in effect
//   retention.purge         compaction dropping a record retention removes
//   upgrade.chunk           an older store's upgrade, after each chunk it rewrote
//   upgrade.before_record   an older store opened, before its new version is recorded
//   backup.after_checkpoint a backup's checkpoint taken, before it is backed up
//   restore.before_rename   a restore's files checked in <target>.restoring, before the rename
#ifndef CAIRN_ENGINE_CRASH_POINT_H_
#define CAIRN_ENGINE_CRASH_POINT_H_

#include <string_view>

namespace cairn::internal {

// Whether this process has a crash point armed (read once).
bool CrashPointArmed();
void HitArmedCrashPoint(std::string_view name);

inline void CrashPoint(std::string_view name) {
  if (CrashPointArmed()) HitArmedCrashPoint(name);
}

}  // namespace cairn::internal

#endif  // CAIRN_ENGINE_CRASH_POINT_H_
