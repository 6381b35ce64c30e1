# A 512-byte boot sector acting as the OSPM side of QEMU's ACPI memory-hotplug interface
# (docs/specs/acpi_mem_hotplug.rst, IO 0xa00-0xa17): for each DIMM slot, if QEMU flagged a remove
# event (status bit 2), clear it and write the eject bit (control bit 3), as the DSDT's MSCN/_EJ0 do
# once Linux has offlined the memory. Woken by the BIOS timer tick (sti; hlt) to poll.
.code16
.globl _start
_start:
  cli
  xor %ax, %ax
  mov %ax, %ds
  mov %ax, %ss
  mov $0x7c00, %sp
  sti
poll:
  xor %ecx, %ecx
slot:
  mov $0xa00, %dx
  mov %ecx, %eax
  outl %eax, %dx
  mov $0xa14, %dx
  inb %dx, %al
  test $4, %al
  jz next
  mov $4, %al
  outb %al, %dx
  mov $8, %al
  outb %al, %dx
next:
  inc %ecx
  cmp $2, %ecx
  jb slot
  hlt
  jmp poll
.org 510
.byte 0x55, 0xaa
