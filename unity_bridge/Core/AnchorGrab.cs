// Grab, move, let go: the participant in control places a model with a hand or controller
// (docs/headsets.md "Input"; the page's press / hold / release, holo/web/src/immersive.js).
//
// The model rides the hand rigidly: it keeps where it sat on the hand when grabbed. With
// H0 the hand and A0 the anchor (model -> room) at the grab, and H the hand now,
//
//     anchor = H * inverse(H0) * A0
//
// so inverse(H) * anchor, the model seen from the hand, stays inverse(H0) * A0. A hand
// that turns about its own origin swings the model about the hand, as a held object
// swings; a hand that only moves carries the model by the same step.
//
// All poses are in the room frame, glTF convention (right-handed, +Y up, metres), as on
// the wire. The same formula in Unity's left-handed frame gives the mirrored result (the
// mirror of Frames.cs conjugates every pose, and conjugation keeps products and inverses),
// so a caller may convert before or after; the Unity layer converts each tracked pose once
// with Frames.ToGltf and works here.
//
// What is sent: a pose is shown and offered as a Drag only when it is more than 1 mm or
// 0.2 degrees from the last one shown (Stillness: a held hand jitters by about 0.1 mm).
// On release the last pose shown is committed (CommitAnchor), unless the model never
// moved: a grab and release in place commits nothing, and no durable event is written for
// a model nobody moved.
using System;

namespace Holo.Bridge.Core
{
    public sealed class AnchorGrab
    {
        /// <param name="modelId">The model held.</param>
        /// <param name="handAtGrab">The hand (the interactor's attach point) in the room
        /// frame, glTF convention, when the grab began.</param>
        /// <param name="anchorAtGrab">The model's anchor pose (model -> room, glTF) then.</param>
        public AnchorGrab(string modelId, Pose handAtGrab, Pose anchorAtGrab)
        {
            if (string.IsNullOrEmpty(modelId)) throw new ArgumentException("a grab holds a model: the model id is empty", "modelId");
            ModelId = modelId;
            HandAtGrab = Unit(handAtGrab, "hand");
            AnchorAtGrab = Unit(anchorAtGrab, "anchor");
            InHand = HandAtGrab.Inverse() * AnchorAtGrab;
            Anchor = AnchorAtGrab;
        }

        public string ModelId { get; private set; }
        public Pose HandAtGrab { get; private set; }
        public Pose AnchorAtGrab { get; private set; }

        /// <summary>The model in the hand's frame: inverse(hand at grab) * anchor at grab,
        /// constant while held.</summary>
        public Pose InHand { get; private set; }

        /// <summary>Where the model is shown: the last anchor <see cref="Move"/> reported as
        /// moved (the anchor at grab until then).</summary>
        public Pose Anchor { get; private set; }

        /// <summary>The model has moved (a Drag was worth sending) since the grab.</summary>
        public bool HasMoved { get; private set; }

        /// <summary>Let go: no more moves.</summary>
        public bool Released { get; private set; }

        /// <summary>The anchor that keeps the model where it sat on the hand, for the hand at
        /// <paramref name="hand"/> (room frame, glTF): hand * inverse(hand at grab) * anchor at
        /// grab, its rotation scaled to unit length.</summary>
        public Pose AnchorFor(Pose hand)
        {
            Pose anchor = Unit(hand, "hand") * InHand;
            return new Pose(anchor.Position, anchor.Rotation.Normalized());
        }

        /// <summary>The hand is at <paramref name="hand"/> now. Returns true, and moves
        /// <see cref="Anchor"/>, when the model's new anchor is more than 1 mm or 0.2 degrees
        /// from where it is shown: show it there and offer it as a Drag. False: it holds
        /// still (tracking noise), nothing to show or send.</summary>
        public bool Move(Pose hand)
        {
            if (Released) throw new InvalidOperationException("model " + ModelId + " was released: start a new grab to move it again");
            Pose anchor = AnchorFor(hand);
            if (!Stillness.Moved(Anchor, anchor)) return false;
            Anchor = anchor;
            HasMoved = true;
            return true;
        }

        /// <summary>Let go: the anchor to commit (where the model is shown), or null when it
        /// never moved (nothing to commit).</summary>
        public Pose? Release()
        {
            Released = true;
            if (!HasMoved) return null;
            return Anchor;
        }

        static Pose Unit(Pose pose, string what)
        {
            if (!pose.Position.IsFinite) throw new ArgumentException("the " + what + " position must be finite, not " + pose.Position, what);
            return new Pose(pose.Position, pose.Rotation.Normalized());
        }
    }
}
