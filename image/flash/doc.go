// Package flash writes an appliance image (see package image: a GPT disk,
// stored as a sparse file) to an SD card, a disk or a file, and checks
// that what reached the device is what the image holds.
//
// Writing: the image's data extents are found with lseek(SEEK_DATA/
// SEEK_HOLE) and copied in 4 MiB pieces on 4 MiB boundaries, in offset
// order. sync_file_range starts writeback of each piece and waits for the
// one before, so at most two pieces are dirty: progress follows the
// device, not the page cache, and the final fsync does not stall for
// minutes. Pages are dropped once written so a big image does not evict
// everything else.
//
// Holes: the image builder skips every all-zero 4 KiB block, and the file
// systems in the image rely on those blocks reading as zero: FAT16's
// tables and root directory (unused entries must be 0, or firmware and
// gokrazy's FAT reader see stale entries), and ext4, which mke2fs made
// with lazily initialised inode tables and journal because a file's holes
// read as zero. Only GPT headers in the first and last MiB would not be
// enough, and which holes are file-system metadata depends on each file
// system's layout. So:
//   - a regular-file target is truncated and extended to the image size;
//     its holes are holes, and stay holes (no blocks are allocated);
//   - on a block device every hole of the image is zeroed: first with
//     fallocate(PUNCH_HOLE), which the kernel only does when the device
//     zeroes in hardware (NVMe/SCSI write-zeroes with unmap, loop devices:
//     no data is transferred); else fallocate(ZERO_RANGE), where the kernel
//     writes zeroes itself or offloads WRITE SAME; else plain zero writes.
//     Most USB SD card readers have no offload, so there the holes cost as
//     much as data. Plain BLKDISCARD is not used: a discarded block need
//     not read back as zero.
//   - When the device is larger than the image, its last MiB is zeroed too,
//     so a stale backup GPT from the card's previous life does not outlive
//     the new table (the image's backup GPT is at the image's end).
//
// Verifying: after fsync the target's cached pages are dropped
// (posix_fadvise DONTNEED on the target, and BLKFLSBUF on a block device,
// which writes back and invalidates its buffer cache), then every written
// data piece is read back with ordinary reads (no O_DIRECT: its alignment
// rules differ per device) and its SHA-256 compared to the image's. Zeroed
// holes are not read back.
//
// Safety: unless Options.Force, Flash refuses a block device that is a
// partition, has a mounted partition (per /proc/self/mountinfo, by
// major:minor or source), is used as swap or held by device-mapper/md, holds
// the running system's root file system (followed through dm/md slaves to
// the disk), or is smaller than the image; it also opens the device with
// O_EXCL, so the kernel refuses one that is mounted after the check.
// A regular-file target is only refused when it is the image itself.
//
// Linux only: the checks read /proc and /sys and the writing uses Linux
// system calls; elsewhere the package is empty and pc2 has no flash
// command.
package flash
