/** The dataset loader: IDX files in, checked and fingerprinted {@link DataBundle} out. */
export type { DataBundle, Dataset } from "../dataset.js";
export { type AllocateBytes, DataError, type IdxArray, MAX_IDX_ITEMS, parseIdx, readIdxFile } from "./idx.js";
export { defaultDataDir, fingerprintData, IDX_FILE_NAMES, type LoadOptions, loadDataset } from "./load.js";
