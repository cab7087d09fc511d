// What a client knows about a model before and while it downloads it (holo.v1
// ModelManifest; holo/export/manifest.py model_manifest writes it): the file's size and
// SHA-256, and its levels of detail, coarse to fine.
//
// The GLB is laid out coarse first: level k is complete, and can be shown, once the first
// CompleteAtBytes bytes have arrived (non-decreasing; the last level's is the file size).
// PrefixSha256 is the SHA-256 hex of that prefix, so a client checks what it shows, and a
// client that stops at its budget checks what it stopped with; the last level's equals the
// file's. Models published before holo recorded it have it empty: such a model is fetched
// whole, to be checked whole.
using System.Collections.Generic;

namespace Holo.Bridge.Core
{
    public sealed class LevelOfDetail
    {
        public int Index { get; private set; }
        public string Name { get; private set; }
        /// <summary>Triangles the whole model draws at this level (every structure).</summary>
        public long Triangles { get; private set; }
        /// <summary>BIN bytes of the views this level is the first to use.</summary>
        public long Bytes { get; private set; }
        /// <summary>Length of the file prefix that holds this level whole.</summary>
        public long CompleteAtBytes { get; private set; }
        /// <summary>SHA-256 hex of that prefix; "" in older records.</summary>
        public string PrefixSha256 { get; private set; }

        public LevelOfDetail(int index, string name, long triangles, long bytes, long completeAtBytes, string prefixSha256)
        {
            Index = index;
            Name = name ?? "";
            Triangles = triangles;
            Bytes = bytes;
            CompleteAtBytes = completeAtBytes;
            PrefixSha256 = prefixSha256 ?? "";
        }
    }

    public sealed class ModelManifest
    {
        public string ModelId { get; private set; }
        public long SizeBytes { get; private set; }
        /// <summary>SHA-256 hex of the whole file.</summary>
        public string Sha256 { get; private set; }
        public IList<LevelOfDetail> Lods { get; private set; }

        public ModelManifest(string modelId, long sizeBytes, string sha256, IEnumerable<LevelOfDetail> lods)
        {
            ModelId = modelId ?? "";
            SizeBytes = sizeBytes;
            Sha256 = sha256 ?? "";
            Lods = new List<LevelOfDetail>(lods).AsReadOnly();
        }

        /// <summary>The last level a device that draws at most <paramref name="maxTriangles"/>
        /// for the whole scene needs: the finest within it, and the coarse level always,
        /// even over budget (something must be shown). The same rule as the page
        /// (holo/web/src/model.js lastLevel). Headset budgets: Runtime/HoloModel.cs.</summary>
        public int LastLevelWithin(long maxTriangles)
        {
            int last = 0;
            for (int k = 0; k < Lods.Count; k++)
            {
                if (Lods[k].Triangles <= maxTriangles) last = k;
            }
            return last;
        }
    }
}
