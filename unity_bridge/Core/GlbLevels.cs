// One level of detail of a holo model as a GLB of its own, cut from the file's prefix.
//
// A holo GLB holds every level as a scene (coarse to fine) and is laid out so that a
// prefix of the file holds level k whole (holo/export/manifest.py layout_coarse_first;
// ModelManifest.cs). A viewer shows level 0 as soon as that prefix arrives. But an
// importer given the prefix sees a GLB whose header and BIN chunk claim the whole file's
// length, and glTFast prepares every mesh of a file when it loads it, scene or not, so the
// finer levels' missing Draco data would fail the load. So the level is cut out: the nodes
// its scene reaches, their meshes, the accessors, materials, textures, images and samplers
// those use, and the buffer views behind them, renumbered, with the views' bytes copied
// into a BIN chunk of their own. The result is a valid GLB (checked with the Khronos
// validator by tests/test_unity_core.py) with one scene, which glTFast loads from bytes.
//
// What a scene uses is what holo/export/manifest.py counts (_Glb.scene_views): node meshes,
// skins' inverse bind matrices, GPU-instancing attributes, primitive attributes, indices,
// morph targets, Draco buffer views, material textures (extensions included), images and
// sparse accessors. Animations are dropped (holo writes none; they would name nodes of
// other levels). Buffer views keep their stride and target; each starts on a 4-byte
// boundary, as GLB requires.
using System;
using System.Collections.Generic;
using System.Text;

namespace Holo.Bridge.Core
{
    public static class GlbLevels
    {
        const uint Magic = 0x46546C67; // "glTF"
        const uint ChunkJson = 0x4E4F534A; // "JSON"
        const uint ChunkBin = 0x004E4942; // "BIN\0"

        /// <summary>The number of levels (scenes) of a GLB, from its JSON chunk.</summary>
        public static int Count(byte[] glb, int available)
        {
            var tree = ReadJson(glb, available);
            object scenes;
            return tree.TryGetValue("scenes", out scenes) ? ((List<object>)scenes).Count : 1;
        }

        /// <summary>Scene <paramref name="level"/> of a GLB whose first
        /// <paramref name="available"/> bytes are in <paramref name="glb"/>, as a GLB of its
        /// own. Throws a FormatException naming what is wrong when it is not a GLB, when
        /// there is no such scene, or when the level's bytes have not all arrived.</summary>
        public static byte[] Extract(byte[] glb, int available, int level)
        {
            Dictionary<string, object> tree = ReadJson(glb, available);
            int jsonLength = (int)ReadUInt(glb, 12);
            int binHeader = 20 + jsonLength;
            int binStart = binHeader + 8;
            bool hasBin = available >= binStart && ReadUInt(glb, binHeader + 4) == ChunkBin;
            int binLength = hasBin ? (int)ReadUInt(glb, binHeader) : 0;

            List<object> scenes = Items(tree, "scenes");
            List<object> roots;
            if (scenes.Count > 0)
            {
                if (level < 0 || level >= scenes.Count) throw new FormatException("the GLB has " + scenes.Count + " scenes; there is no level " + level);
                roots = Items((Dictionary<string, object>)scenes[level], "nodes");
            }
            else
            {
                if (level != 0) throw new FormatException("a GLB without scenes has one level; there is no level " + level);
                roots = RootNodes(tree);
            }

            var cut = new Cut(tree);
            var newRoots = new List<object>();
            foreach (object root in roots) newRoots.Add((long)cut.Node(Index(root)));

            // The BIN chunk of the level: each kept view's bytes (and a meshopt view's
            // compressed range), in the order first used, 4-byte aligned.
            var bin = new List<byte>();
            foreach (Dictionary<string, object> region in cut.Regions)
            {
                long offset = Long(region, "byteOffset", 0), length = Long(region, "byteLength", 0);
                if (!hasBin || offset + length > binLength)
                {
                    throw new FormatException("a buffer view of level " + level + " lies past the GLB's BIN chunk; is it a holo model?");
                }
                if (binStart + offset + length > available)
                {
                    throw new FormatException("level " + level + " has not arrived whole: it needs byte " + (binStart + offset + length) + ", " + available + " are here");
                }
                while (bin.Count % 4 != 0) bin.Add(0);
                region["byteOffset"] = (long)bin.Count;
                for (long k = 0; k < length; k++) bin.Add(glb[binStart + offset + k]);
            }

            var scene = new Dictionary<string, object>();
            if (scenes.Count > 0)
            {
                foreach (KeyValuePair<string, object> kv in (Dictionary<string, object>)scenes[level]) scene[kv.Key] = kv.Value;
            }
            scene["nodes"] = newRoots;
            var output = new Dictionary<string, object>();
            foreach (KeyValuePair<string, object> kv in tree)
            {
                if (kv.Key != "animations") output[kv.Key] = kv.Value;
            }
            output["scene"] = 0L;
            output["scenes"] = new List<object> { scene };
            cut.Store(output);
            List<object> buffers = Items(tree, "buffers");
            if (!output.ContainsKey("bufferViews"))
            {
                output.Remove("buffers"); // nothing of the level is in a buffer
            }
            else if (buffers.Count > 0)
            {
                var first = new Dictionary<string, object>((Dictionary<string, object>)buffers[0]);
                first["byteLength"] = (long)bin.Count;
                var newBuffers = new List<object>(buffers);
                newBuffers[0] = first;
                output["buffers"] = newBuffers;
            }
            return Pack(Json.Write(output), bin);
        }

        static Dictionary<string, object> ReadJson(byte[] glb, int available)
        {
            if (available < 20 || available > glb.Length || ReadUInt(glb, 0) != Magic || ReadUInt(glb, 4) != 2)
            {
                throw new FormatException("not a GLB 2.0 file (no 'glTF' header of version 2)");
            }
            int jsonLength = (int)ReadUInt(glb, 12);
            if (ReadUInt(glb, 16) != ChunkJson) throw new FormatException("the GLB's first chunk is not JSON");
            if (20 + jsonLength > available) throw new FormatException("the GLB's JSON chunk has not arrived whole");
            var tree = Json.Parse(Encoding.UTF8.GetString(glb, 20, jsonLength)) as Dictionary<string, object>;
            if (tree == null) throw new FormatException("the GLB's JSON chunk is not an object");
            return tree;
        }

        static byte[] Pack(string json, List<byte> bin)
        {
            byte[] text = Encoding.UTF8.GetBytes(json);
            int jsonPadded = (text.Length + 3) / 4 * 4;
            int binPadded = (bin.Count + 3) / 4 * 4;
            int total = 12 + 8 + jsonPadded + (bin.Count > 0 ? 8 + binPadded : 0);
            var glb = new byte[total];
            WriteUInt(glb, 0, Magic);
            WriteUInt(glb, 4, 2);
            WriteUInt(glb, 8, (uint)total);
            WriteUInt(glb, 12, (uint)jsonPadded);
            WriteUInt(glb, 16, ChunkJson);
            Array.Copy(text, 0, glb, 20, text.Length);
            for (int k = 20 + text.Length; k < 20 + jsonPadded; k++) glb[k] = 0x20; // JSON pads with spaces
            if (bin.Count > 0)
            {
                int at = 20 + jsonPadded;
                WriteUInt(glb, at, (uint)binPadded);
                WriteUInt(glb, at + 4, ChunkBin);
                bin.CopyTo(glb, at + 8); // and the BIN chunk with zeros (new array)
            }
            return glb;
        }

        static uint ReadUInt(byte[] b, int at)
        {
            return (uint)(b[at] | b[at + 1] << 8 | b[at + 2] << 16 | b[at + 3] << 24);
        }

        static void WriteUInt(byte[] b, int at, uint value)
        {
            b[at] = (byte)value;
            b[at + 1] = (byte)(value >> 8);
            b[at + 2] = (byte)(value >> 16);
            b[at + 3] = (byte)(value >> 24);
        }

        static List<object> RootNodes(Dictionary<string, object> tree)
        {
            List<object> nodes = Items(tree, "nodes");
            var children = new HashSet<int>();
            foreach (object node in nodes)
            {
                foreach (object c in Items((Dictionary<string, object>)node, "children")) children.Add(Index(c));
            }
            var roots = new List<object>();
            for (int k = 0; k < nodes.Count; k++)
            {
                if (!children.Contains(k)) roots.Add((long)k);
            }
            return roots;
        }

        internal static List<object> Items(Dictionary<string, object> o, string key)
        {
            object value;
            return o != null && o.TryGetValue(key, out value) && value is List<object> ? (List<object>)value : new List<object>();
        }

        static Dictionary<string, object> Child(Dictionary<string, object> o, string key)
        {
            object value;
            return o != null && o.TryGetValue(key, out value) ? value as Dictionary<string, object> : null;
        }

        static long Long(Dictionary<string, object> o, string key, long otherwise)
        {
            object value;
            return o.TryGetValue(key, out value) ? Convert.ToInt64(value) : otherwise;
        }

        static int Index(object value) { return (int)Convert.ToInt64(value); }

        /// <summary>The kept objects of each top-level array, renumbered in the order first
        /// reached: copies of the originals with their references rewritten.</summary>
        sealed class Cut
        {
            readonly Dictionary<string, object> tree;
            readonly Dictionary<string, Dictionary<int, int>> maps = new Dictionary<string, Dictionary<int, int>>();
            readonly Dictionary<string, List<object>> kept = new Dictionary<string, List<object>>();
            public readonly List<Dictionary<string, object>> Regions = new List<Dictionary<string, object>>();

            public Cut(Dictionary<string, object> tree) { this.tree = tree; }

            // The new index of object `index` of array `kind`, copying it on first use; the
            // copy's references are rewritten by `rewrite`.
            int Take(string kind, int index, Action<Dictionary<string, object>> rewrite)
            {
                Dictionary<int, int> map;
                if (!maps.TryGetValue(kind, out map))
                {
                    map = new Dictionary<int, int>();
                    maps[kind] = map;
                    kept[kind] = new List<object>();
                }
                int found;
                if (map.TryGetValue(index, out found)) return found;
                List<object> all = Items(tree, kind);
                if (index < 0 || index >= all.Count) throw new FormatException(kind + " " + index + " does not exist (the GLB has " + all.Count + ")");
                var copy = DeepCopy((Dictionary<string, object>)all[index]);
                int next = kept[kind].Count;
                map[index] = next;
                kept[kind].Add(copy);
                rewrite(copy);
                return next;
            }

            static Dictionary<string, object> DeepCopy(Dictionary<string, object> o)
            {
                var copy = new Dictionary<string, object>();
                foreach (KeyValuePair<string, object> kv in o) copy[kv.Key] = DeepCopy(kv.Value);
                return copy;
            }

            static object DeepCopy(object value)
            {
                var map = value as Dictionary<string, object>;
                if (map != null) return DeepCopy(map);
                var list = value as List<object>;
                if (list == null) return value;
                var copy = new List<object>(list.Count);
                foreach (object item in list) copy.Add(DeepCopy(item));
                return copy;
            }

            void Remap(Dictionary<string, object> o, string key, Func<int, int> take)
            {
                if (o != null && o.ContainsKey(key)) o[key] = (long)take(Index(o[key]));
            }

            void RemapAll(Dictionary<string, object> o, Func<int, int> take)
            {
                if (o == null) return;
                foreach (string key in new List<string>(o.Keys)) o[key] = (long)take(Index(o[key]));
            }

            public int Node(int index)
            {
                return Take("nodes", index, node =>
                {
                    var children = Items(node, "children");
                    for (int k = 0; k < children.Count; k++) children[k] = (long)Node(Index(children[k]));
                    Remap(node, "mesh", Mesh);
                    Remap(node, "skin", Skin);
                    Remap(node, "camera", c => Take("cameras", c, _ => { }));
                    RemapAll(Child(Child(Child(node, "extensions"), "EXT_mesh_gpu_instancing"), "attributes") as Dictionary<string, object>, Accessor);
                });
            }

            int Skin(int index)
            {
                return Take("skins", index, skin =>
                {
                    Remap(skin, "inverseBindMatrices", Accessor);
                    Remap(skin, "skeleton", Node);
                    var joints = Items(skin, "joints");
                    for (int k = 0; k < joints.Count; k++) joints[k] = (long)Node(Index(joints[k]));
                });
            }

            int Mesh(int index)
            {
                return Take("meshes", index, mesh =>
                {
                    foreach (object p in Items(mesh, "primitives"))
                    {
                        var primitive = (Dictionary<string, object>)p;
                        RemapAll(Child(primitive, "attributes"), Accessor);
                        Remap(primitive, "indices", Accessor);
                        Remap(primitive, "material", Material);
                        foreach (object target in Items(primitive, "targets")) RemapAll(target as Dictionary<string, object>, Accessor);
                        Remap(Child(Child(primitive, "extensions"), "KHR_draco_mesh_compression"), "bufferView", View);
                    }
                });
            }

            int Material(int index) { return Take("materials", index, RemapTextures); }

            // Every "*Texture" object's index, extensions included (as manifest.py finds them).
            void RemapTextures(object value)
            {
                var map = value as Dictionary<string, object>;
                if (map != null)
                {
                    foreach (string key in new List<string>(map.Keys))
                    {
                        var item = map[key] as Dictionary<string, object>;
                        if (key.EndsWith("Texture", StringComparison.Ordinal) && item != null && item.ContainsKey("index"))
                        {
                            item["index"] = (long)Texture(Index(item["index"]));
                        }
                        RemapTextures(map[key]);
                    }
                    return;
                }
                var list = value as List<object>;
                if (list != null) foreach (object item in list) RemapTextures(item);
            }

            int Texture(int index)
            {
                return Take("textures", index, texture =>
                {
                    Remap(texture, "source", Image);
                    Remap(texture, "sampler", s => Take("samplers", s, _ => { }));
                    var extensions = Child(texture, "extensions");
                    if (extensions != null)
                    {
                        foreach (object ext in extensions.Values) Remap(ext as Dictionary<string, object>, "source", Image);
                    }
                });
            }

            int Image(int index) { return Take("images", index, image => Remap(image, "bufferView", View)); }

            int Accessor(int index)
            {
                return Take("accessors", index, accessor =>
                {
                    Remap(accessor, "bufferView", View);
                    var sparse = Child(accessor, "sparse");
                    Remap(Child(sparse, "indices"), "bufferView", View);
                    Remap(Child(sparse, "values"), "bufferView", View);
                });
            }

            int View(int index)
            {
                return Take("bufferViews", index, view =>
                {
                    if (Long(view, "buffer", 0) == 0) Regions.Add(view);
                    var meshopt = Child(Child(view, "extensions"), "EXT_meshopt_compression");
                    if (meshopt != null && Long(meshopt, "buffer", 0) == 0) Regions.Add(meshopt);
                });
            }

            /// <summary>The kept arrays into the output tree (absent ones removed).</summary>
            public void Store(Dictionary<string, object> output)
            {
                foreach (string kind in new[] { "nodes", "meshes", "skins", "cameras", "materials", "textures", "images", "samplers", "accessors", "bufferViews" })
                {
                    List<object> items;
                    if (kept.TryGetValue(kind, out items) && items.Count > 0) output[kind] = items;
                    else output.Remove(kind);
                }
            }
        }
    }
}
