/**
 * VFIO and kvm-vfio uAPI constants the model uses. Data only.
 *
 * Kernel counterpart: include/uapi/linux/vfio.h (VFIO_TYPE1v2_IOMMU, VFIO_DMA_CC_IOMMU, the MAP/UNMAP_DMA
 * flags), include/uapi/linux/kvm.h (enum kvm_device_type, KVM_DEV_VFIO_*, KVM_CREATE_DEVICE_TEST).
 */

/** VFIO_SET_IOMMU / VFIO_CHECK_EXTENSION arguments. */
export const VFIO_TYPE1_IOMMU = 1;
export const VFIO_TYPE1v2_IOMMU = 3;
/** VFIO_CHECK_EXTENSION: do all of the container's IOMMU domains enforce cache coherency? */
export const VFIO_DMA_CC_IOMMU = 4;
export const VFIO_UNMAP_ALL = 9;

/** struct vfio_iommu_type1_dma_map.flags */
export const VFIO_DMA_MAP_FLAG_READ = 1 << 0;
export const VFIO_DMA_MAP_FLAG_WRITE = 1 << 1;
export const VFIO_DMA_MAP_FLAG_VADDR = 1 << 2;

/** struct vfio_iommu_type1_dma_unmap.flags */
export const VFIO_DMA_UNMAP_FLAG_GET_DIRTY_BITMAP = 1 << 0;
export const VFIO_DMA_UNMAP_FLAG_ALL = 1 << 1;
export const VFIO_DMA_UNMAP_FLAG_VADDR = 1 << 2;

/** enum kvm_device_type: KVM_DEV_TYPE_VFIO */
export const KVM_DEV_TYPE_VFIO = 4;
/** struct kvm_create_device.flags */
export const KVM_CREATE_DEVICE_TEST = 1;
/** kvm-vfio device attribute group and attributes */
export const KVM_DEV_VFIO_FILE = 1;
export const KVM_DEV_VFIO_FILE_ADD = 1;
export const KVM_DEV_VFIO_FILE_DEL = 2;
