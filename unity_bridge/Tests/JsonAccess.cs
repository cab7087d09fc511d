// Typed access to the parsed shared vectors (Json.Parse), failing with the path that was wrong.
using System.Collections.Generic;

namespace Holo.Bridge.Core.Tests
{
    /// <summary>Typed access to parsed JSON, failing with the path that was wrong.</summary>
    public static class J
    {
        public static Dictionary<string, object> Obj(object value) { return (Dictionary<string, object>)value; }
        public static List<object> Arr(object value) { return (List<object>)value; }
        public static object At(object value, string key) { return Obj(value)[key]; }
        public static Dictionary<string, object> Obj(object value, string key) { return Obj(At(value, key)); }
        public static List<object> Arr(object value, string key) { return Arr(At(value, key)); }
        public static string Str(object value, string key) { return (string)At(value, key); }
        public static bool Has(object value, string key) { return Obj(value).ContainsKey(key); }
        public static bool Bool(object value, string key) { return (bool)At(value, key); }
        public static long Long(object value) { return value is long ? (long)value : checked((long)(double)value); }
        public static long Long(object value, string key) { return Long(At(value, key)); }
        public static double Num(object value) { return value is long ? (long)value : (double)value; }
        public static double Num(object value, string key) { return Num(At(value, key)); }

        public static Vec3 Vec3(object value)
        {
            List<object> a = Arr(value);
            return new Vec3(Num(a[0]), Num(a[1]), Num(a[2]));
        }

        public static Quat Quat(object value)
        {
            List<object> a = Arr(value);
            return new Quat(Num(a[0]), Num(a[1]), Num(a[2]), Num(a[3]));
        }

        /// <summary>{"position": [x, y, z], "rotation": [x, y, z, w]} (Pose.to_json).</summary>
        public static Pose Pose(object value)
        {
            return new Pose(Vec3(At(value, "position")), Quat(At(value, "rotation")));
        }
    }
}
