/**
 * fallocate(2) mode bits (include/uapi/linux/falloc.h) that guest_memfd understands. Data only.
 */
export const FALLOC_FL_KEEP_SIZE = 0x01;
export const FALLOC_FL_PUNCH_HOLE = 0x02;
